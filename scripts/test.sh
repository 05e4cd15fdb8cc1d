#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, and end-to-end tests on real Open vSwitch
# in network namespaces. Run as root on Debian: `sudo scripts/test.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The end-to-end tests run the real binaries (switchyard, switchyard-cni, yardctl): build them first.
cargo build --workspace --bins
cargo test --workspace
