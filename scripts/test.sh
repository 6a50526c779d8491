#!/usr/bin/env bash
# Lints, starts moto's server on a free loopback port, runs every test against it,
# and stops it again, whatever happens. Called by `make test` (which installs the
# venv first).
set -euo pipefail
cd "$(dirname "$0")/.."

# The machine image ships cargo-nextest; install it only where it is missing.
cargo nextest --version >/dev/null 2>&1 || cargo install --locked --quiet cargo-nextest

# Debian's Chromium and ChromeDriver: a test renders the consent pages in them.
if ! command -v chromedriver >/dev/null || [ ! -x /usr/bin/chromium ]; then
    echo "== installing chromium and chromium-driver (Debian packages)"
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null ||
        { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null; }
fi

# Node and npm (Debian packages): a test runs the TypeScript client example.
if ! command -v npm >/dev/null; then
    echo "== installing nodejs and npm (Debian packages)"
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -q --no-install-recommends nodejs npm >/dev/null ||
        { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q --no-install-recommends nodejs npm >/dev/null; }
fi

echo "== lint"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
# The rustdoc on public items must build, links included.
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
.venv/bin/cfn-lint template.yaml
# The SAM transform itself (offline; dummy credentials): what CloudFormation runs
# on deploy. cfn-lint and `sam validate --lint` do not run it.
env AWS_ACCESS_KEY_ID=validate AWS_SECRET_ACCESS_KEY=validate SAM_CLI_TELEMETRY=0 \
    .venv/bin/sam validate --region us-east-1 --template template.yaml
[ "${1:-}" = "--lint-only" ] && exit 0

echo "== sam build"
# The deployable artifacts, built as `sam build` builds them for a deploy (cargo-lambda
# from the venv): arm64 where its Rust target is installed, x86_64 always.
PATH="$PWD/.venv/bin:$PATH" scripts/sam-build.sh

echo "== build"
cargo nextest run --workspace --no-run --cargo-quiet
# `make run`'s binary and the operator CLI: tests start them as a person would.
cargo build -p local-run -p rdconn --quiet
# The TypeScript client example, built as its README says (pinned by its lock file).
npm ci --prefix examples/clients/typescript --no-audit --no-fund --silent
npm run --prefix examples/clients/typescript --silent build
# Tests run the functions' deployable artifacts (from `sam build` above) under a
# Lambda Runtime API emulator.
export LAMBDA_ARTIFACTS="$PWD/.aws-sam/build-x86_64"

# shellcheck source=scripts/moto.sh
source scripts/moto.sh

# Every test process logs here; the scan below reads the whole suite's log.
export TEST_LOG_DIR="$PWD/target/test-logs"
rm -rf "$TEST_LOG_DIR" && mkdir -p "$TEST_LOG_DIR"

echo "== test (moto on $AWS_ENDPOINT_URL)"
cargo test --workspace --doc --quiet
# nextest runs each test in its own process and ends with one summary line.
status=0
cargo nextest run --workspace --no-fail-fast --cargo-quiet -E 'not binary(soak)' || status=$?
# The fault soak alone, afterwards: it keeps moto (one request at a time) busy for
# minutes, which would starve the timing-sensitive lease tests beside it.
echo "== fault soak"
cargo nextest run --workspace --no-fail-fast --cargo-quiet -E 'binary(soak)' || status=$?
# Quiet on success, so the test runner's summary stays the run's closing line.
python3 scripts/check-test-logs.py "$TEST_LOG_DIR" > target/test-logs/scan.txt || { cat target/test-logs/scan.txt; exit 1; }
exit "$status"
