#!/usr/bin/env bash
# The benchmarks (see docs/benchmarks.md), release builds against moto on
# loopback: the refresher (sandbox with 50 ms token latency), then the proxy's
# overhead over a direct call; each function's artifact size and cold start.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p integration-tests --example refresh_bench --example proxy_bench --example cold_start
# The deployable artifacts, for their size and cold start.
PATH="$PWD/.venv/bin:$PATH" scripts/sam-build.sh
# shellcheck source=scripts/moto.sh
source scripts/moto.sh
target/release/examples/refresh_bench
target/release/examples/proxy_bench
target/release/examples/cold_start
