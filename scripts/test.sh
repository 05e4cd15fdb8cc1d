#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, and end-to-end tests on real Open vSwitch
# in network namespaces. Run as root on Debian: `sudo scripts/test.sh`. Each lane says how long
# it took; a summary follows at the end. Tests that need root skip with a message otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

timings=()
lane() {
  local name=$1
  shift
  local started=$SECONDS
  echo "== lane ${name}: $*"
  "$@"
  local took=$((SECONDS - started))
  timings+=("${name} ${took}")
  echo "== lane ${name}: ${took} s"
}

lane deps scripts/install-deps.sh
lane fmt cargo fmt --all -- --check
lane clippy cargo clippy --workspace --all-targets -- -D warnings
# The end-to-end tests run the real binaries (switchyard, switchyard-cni, yardctl): build them
# (and every test binary) first, so the test lanes measure tests, not compilation.
lane build cargo build --workspace --bins --tests
# Pure logic, no root, no OVS: state, features, realiser, codecs.
lane unit cargo test --workspace --lib
# Protocol tests against real ovsdb-server/ovs-vswitchd, the controller core against simulated
# switches, and end-to-end clusters of network namespaces (root): every integration-test
# target of the workspace. Selected with `--workspace` so features unify exactly as in the
# build lane (`-p switchyard-tests` alone resolves getrandom differently and recompiles).
lane integration-and-e2e cargo test --workspace --test '*'
lane doc cargo test --workspace --doc

echo "== lanes (seconds):"
for t in "${timings[@]}"; do
  echo "   $t"
done
