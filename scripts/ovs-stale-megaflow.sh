#!/bin/bash
# Reproduces, without Switchyard, the stale datapath flow of OVS's userspace datapath
# (docs/operations.md, "Known OVS issues"): a flow toggled between drop and goto_table with
# `ovs-ofctl mod-flows` while three kinds of traffic run. After each toggle back to allow it
# probes UDP/80 and TCP/80 three times over about 2 s; a round whose last probe still fails
# is stale (the OpenFlow tables allow it) and its drop flows are printed.
#
#   bash scripts/ovs-stale-megaflow.sh [ROUNDS] [on|off]     (megaflows; default 15 on)
#
# Everything runs in namespaces it creates (sy-mf<pid>-*) and a directory under /tmp; it
# stops its daemons by PID and removes both at the end. Needs root, OVS, python3, ethtool.
set -u
ROUNDS=${1:-15}
MEGAFLOWS=${2:-on}
NS=symf$$
D=$(mktemp -d /tmp/ovs-stale-megaflow.XXXXXX)
SRV=
cleanup() {
  [ -n "$SRV" ] && kill "$SRV" 2>/dev/null
  for p in vs db; do [ -f "$D/$p.pid" ] && kill "$(cat "$D/$p.pid")" 2>/dev/null; done
  sleep 0.3
  for n in sw a b; do ip netns del "$NS$n" 2>/dev/null; done
  rm -rf "$D"
}
trap cleanup EXIT
for n in sw a b; do ip netns add "$NS$n"; done
X="ip netns exec ${NS}sw"
export OVS_RUNDIR=$D OVS_LOGDIR=$D OVS_DBDIR=$D
ovsdb-tool create "$D/conf.db" /usr/share/openvswitch/vswitch.ovsschema
$X ovsdb-server "$D/conf.db" --remote="punix:$D/db.sock" --pidfile="$D/db.pid" --detach --log-file="$D/db.log"
V="$X ovs-vsctl --db=unix:$D/db.sock"
$V --no-wait init
$X ovs-vswitchd "unix:$D/db.sock" --pidfile="$D/vs.pid" --detach --log-file="$D/vs.log" --unixctl="$D/vs.ctl"
APPCTL="ovs-appctl -t $D/vs.ctl"
[ "$MEGAFLOWS" = off ] && $APPCTL upcall/disable-megaflows
$V add-br br0 -- set bridge br0 datapath_type=netdev
for p in a b; do
  $X ip link add "v$p" type veth peer name "e$p"
  $X ip link set "e$p" netns "$NS$p"
  $X ip link set "v$p" up
  $V add-port br0 "v$p" -- set interface "v$p" "ofport_request=$([ $p = a ] && echo 1 || echo 2)"
  ip netns exec "$NS$p" ethtool -K "e$p" tx off >/dev/null
  ip -n "$NS$p" link set lo up
  ip -n "$NS$p" link set "e$p" up
done
ip -n "${NS}a" addr add 10.9.0.1/24 dev ea
ip -n "${NS}b" addr add 10.9.0.2/24 dev eb
OF="$X ovs-ofctl -O OpenFlow13"
$OF del-flows br0
$OF add-flows br0 - <<F
table=0,priority=100,arp,actions=NORMAL
table=0,priority=10,ip,nw_src=10.9.0.1,nw_dst=10.9.0.2,actions=goto_table:1
table=0,priority=5,ip,in_port=2,actions=output:1
table=1,priority=10,udp,tp_dst=80,actions=output:2
table=1,priority=5,ip,actions=output:2
F
ip netns exec "${NS}b" python3 -c '
import socket, threading
def tcp():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", 80)); s.listen(100)
    while True:
        c, _ = s.accept(); c.close()
threading.Thread(target=tcp, daemon=True).start()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 80))
while True:
    d, a = u.recvfrom(100); u.sendto(b"ok", a)' &
SRV=$!
sleep 0.5
# One UDP/80 request and one TCP/80 connection: "UT" when both work (lower case: failed).
probe() { ip netns exec "${NS}a" python3 -c '
import socket
out = ""
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(0.3)
u.sendto(b"x", ("10.9.0.2", 80))
try: u.recv(10); out += "U"
except OSError: out += "u"
t = socket.socket(); t.settimeout(0.3)
try: t.connect(("10.9.0.2", 80)); out += "T"
except OSError: out += "t"
print(out)'; }
# Traffic only the wide drop flow covers (UDP/81), so its flow is installed and hit most.
flood() { ip netns exec "${NS}a" python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(3000): s.sendto(b"x", ("10.9.0.2", 81))'; }
stale=0
for i in $(seq 1 "$ROUNDS"); do
  probe >/dev/null
  $OF mod-flows br0 "table=0,priority=10,ip,nw_src=10.9.0.1,nw_dst=10.9.0.2,actions=drop"
  sleep 0.7; flood; sleep 1.1; probe >/dev/null; probe >/dev/null
  $OF mod-flows br0 "table=0,priority=10,ip,nw_src=10.9.0.1,nw_dst=10.9.0.2,actions=goto_table:1"
  sleep 1.2
  r1=$(probe); sleep 0.5; r2=$(probe); sleep 1; r3=$(probe)
  echo "round $i, after the toggle back to allow: $r1 $r2 $r3"
  if [ "$r3" != UT ]; then
    stale=$((stale + 1))
    $APPCTL dpctl/dump-flows | grep 'src=10.9.0.1' | grep 'actions:drop'
  fi
done
echo "megaflows=$MEGAFLOWS rounds=$ROUNDS stale=$stale"
