#!/usr/bin/env bash
# Installs what Switchyard's demo and tests need on a fresh Debian machine (run as root).
# Only Debian packages; nothing is downloaded from anywhere else.
set -euo pipefail

packages=(
  openvswitch-switch      # ovsdb-server, ovs-vswitchd (userspace datapath), ovs-ofctl, ovs-vsctl
  python3-openvswitch     # python-ovs IDL: the peer in the OVSDB benchmark
  iproute2                # ip netns, veth
  ethtool                 # tx checksum offload off (userspace datapath)
  iputils-ping            # connectivity checks
  nftables                # nft: node setup's SNAT of pod traffic leaving the cluster (iptables is the fallback)
  iperf3                  # data-plane benchmark
  iptables                # node setup's SNAT fallback (tested in e2e_netmodel)
  procps                  # sysctl (tests read forwarding settings)
  util-linux              # unshare, setpriv (the DaemonSet test runs containers with them)
  mount                   # mount (overlay, bind mounts: the same test)
  bc
  containernetworking-plugins  # reference bridge/host-local CNI plugins (attach-latency peer)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing packages ${missing[*]}; run as root to install them" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The Debian package starts the system OVS service; Switchyard's demo and tests run their own
# daemons in network namespaces and never need it. We leave it as the machine has it.
command -v cargo >/dev/null || { echo "install-deps: cargo (Rust toolchain) is required" >&2; exit 1; }
