# Sourced by scripts that need moto: starts moto's server (scripts/moto_server.py:
# one request at a time, as DynamoDB's conditional writes are atomic) on a free loopback port,
# exports the AWS SDK's variables to point at it, and stops it on exit.
# Needs the venv that `make venv` installs.

moto_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p target
.venv/bin/python scripts/moto_server.py "$moto_port" > target/moto.log 2>&1 &
moto_pid=$!
trap 'kill "$moto_pid" 2>/dev/null || true; wait "$moto_pid" 2>/dev/null || true' EXIT

# Wait for moto to accept connections (it starts in about a second).
python3 - "$moto_port" <<'PY'
import socket, sys, time
deadline = time.monotonic() + 30
while True:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit("moto did not start; see target/moto.log")
        time.sleep(0.05)
PY

export AWS_ENDPOINT_URL="http://127.0.0.1:$moto_port"
export AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing
export AWS_EC2_METADATA_DISABLED=true
