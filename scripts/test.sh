#!/usr/bin/env bash
# Lints, starts moto's server on a free loopback port, runs every test against it,
# and stops it again, whatever happens. Called by `make test` (which installs the
# venv first).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== lint"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
.venv/bin/cfn-lint template.yaml
[ "${1:-}" = "--lint-only" ] && exit 0

echo "== build"
cargo nextest run --workspace --no-run --cargo-quiet

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p target
.venv/bin/moto_server -H 127.0.0.1 -p "$port" > target/moto.log 2>&1 &
moto_pid=$!
trap 'kill "$moto_pid" 2>/dev/null || true; wait "$moto_pid" 2>/dev/null || true' EXIT

# Wait for moto to accept connections (it starts in about a second).
python3 - "$port" <<'PY'
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

export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
export AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing
export AWS_EC2_METADATA_DISABLED=true

# Every test process logs here; the scan below reads the whole suite's log.
export TEST_LOG_DIR="$PWD/target/test-logs"
rm -rf "$TEST_LOG_DIR" && mkdir -p "$TEST_LOG_DIR"

echo "== test (moto on $AWS_ENDPOINT_URL)"
cargo test --workspace --doc --quiet
# nextest runs each test in its own process and ends with one summary line.
status=0
cargo nextest run --workspace --no-fail-fast --cargo-quiet || status=$?
# Quiet on success, so the test runner's summary stays the run's closing line.
python3 scripts/check-test-logs.py "$TEST_LOG_DIR" > target/test-logs/scan.txt || { cat target/test-logs/scan.txt; exit 1; }
exit "$status"
