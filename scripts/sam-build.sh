#!/usr/bin/env bash
# `sam build` for each architecture this machine can build: x86_64 always, arm64
# where the aarch64 Rust target is installed. Artifacts go to .aws-sam/build-<arch>
# (the deploy guide's `sam build` writes .aws-sam/build).
set -euo pipefail
cd "$(dirname "$0")/.."
architectures=(x86_64)
if rustup target list --installed 2>/dev/null | grep -q '^aarch64-unknown-linux-gnu$'; then
    architectures+=(arm64)
fi
for arch in "${architectures[@]}"; do
    # Quiet unless it fails: cargo's own output is long.
    log="target/sam-build-$arch.log"
    mkdir -p target
    if ! SAM_CLI_TELEMETRY=0 sam build --parameter-overrides "Architecture=$arch" \
        --build-dir ".aws-sam/build-$arch" --cache-dir ".aws-sam/cache-$arch" >"$log" 2>&1; then
        cat "$log"
        exit 1
    fi
    echo "sam build ($arch): $(ls .aws-sam/build-"$arch"/*/bootstrap | wc -l) functions"
done
