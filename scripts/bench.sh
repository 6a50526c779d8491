#!/usr/bin/env bash
# The refresher benchmark (see docs/benchmarks.md): a release build, moto on
# loopback, the sandbox with 50 ms token latency.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p integration-tests --example refresh_bench
# shellcheck source=scripts/moto.sh
source scripts/moto.sh
target/release/examples/refresh_bench
