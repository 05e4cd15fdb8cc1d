# syntax=docker/dockerfile:1
# Switchyard's two images, built from this workspace (docs/operations.md, "Install"):
#
#   docker build --target controller -t switchyard-controller:0.1.0 .
#   docker build --target node       -t switchyard-node:0.1.0 .
#
# controller: `switchyard` and `yardctl` on Debian slim, run as uid 65532 (the Deployment).
# node: the same binaries plus `switchyard-cni` and Debian's Open vSwitch, iproute2,
# nftables and iptables (the DaemonSet: OVS, node setup, the CNI plugin it installs).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The lock file as committed (--locked); caches survive between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p switchyard -p switchyard-cni --bins \
    && install -D -m 0755 -t /out \
        target/release/switchyard target/release/yardctl target/release/switchyard-cni

FROM debian:bookworm-slim AS controller
COPY --from=build /out/switchyard /out/yardctl /usr/local/bin/
# No root, no capability: it only talks to the API server and the nodes.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/switchyard"]

FROM debian:bookworm-slim AS node
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        openvswitch-switch iproute2 nftables iptables kmod \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/switchyard /out/yardctl /out/switchyard-cni /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/switchyard"]
