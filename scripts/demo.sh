#!/usr/bin/env bash
# The main job: a local three-node cluster on real Open vSwitch, pods reaching each other.
# Run as root on Debian: `sudo scripts/demo.sh` (extra arguments go to `switchyard demo`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# Builds every binary: `switchyard demo` runs `switchyard-demo` from the same directory.
cargo build --release --bins
exec target/release/switchyard demo --cni-bin target/release/switchyard-cni "$@"
