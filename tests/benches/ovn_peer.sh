#!/usr/bin/env bash
# OVN baseline: how fast OVN (ovn-northd + ovn-controller + ovs-vswitchd) realises PODS pods
# and POLICIES network policies modelled the way ovn-kubernetes models them, on one chassis
# with the OVS userspace datapath. It is the peer a new controller is compared against on
# the same work.
#
# This copy is the OVN side of `cargo bench -p switchyard-tests --bench policy_vs_ovn`, which
# runs it; it is shared/bench/ovn-baseline.sh (written by the team) with only the work
# directory (/tmp/syob-ovn) and network namespace (syobovn) renamed, to the benchmark's prefix.
#
#   sudo PODS=1000 POLICIES=200 bash tests/benches/ovn_peer.sh
#
# Knobs (environment): PODS (1000), POLICIES (200), PORT_TYPE (internal | dummy; internal
# makes a tap device per pod), INCR (5 samples of each incremental measurement),
# BUNDLE_IDLE_TIMEOUT (180, as ovn-kubernetes sets it), KEEP=1 (keep /tmp/syob-ovn after a
# successful run; it is always kept after a failure).
#
# WORKLOAD=lb runs the Service benchmark's workload instead (benches/ovn_lb.sh, sourced after
# the sandbox is up); OVN_WORKDIR and OVN_NETNS move the work directory and namespace.
#
# Needs root and Debian's openvswitch-switch, ovn-central, ovn-host. Everything lives in
# /tmp/syob-ovn and talks over unix sockets there; ovs-vswitchd runs in its own network
# namespace (two userspace vswitchd in one namespace collide on the ovs-netdev tap), so
# nothing touches the host's interfaces. Every daemon is stopped by the PID in its pidfile,
# on exit and again at the start of the next run (idempotent).
#
# Workload (deterministic; a comparison must build exactly this):
#   pod j, 0 <= j < PODS: logical switch port "pod<j>" on switch "ls0"; with n = j + 2,
#     IP 10.244.<n/256>.<n%256>, MAC 0a:58:0a:f4:<n/256>:<n%256> (hex), addresses and
#     port_security "MAC IP"; an OVS interface "pod<j>" on br-int, iface-id=pod<j>.
#   policy i, 0 <= i < POLICIES: port group pg_<i> = pods with j%10 == i%10; address set
#     as_<i> = IPs of the pods with j%10 == (i+1)%10; to-lport ACLs on pg_<i>, as
#     ovn-kubernetes writes them (a policy rule, its default deny, the ARP exception):
#       1001 allow-related  outport == @pg_<i> && ip4.src == $as_<i> && tcp.dst == {80,443}
#       1001 allow          outport == @pg_<i> && arp
#       1000 drop           outport == @pg_<i>
#
# Measured: (a) nb_apply_s, the NB transactions (pods, then policies; the lookup of the pods'
# UUIDs in between is not counted); (b) realize_hv_s, from (a) done until `ovn-nbctl
# --wait=hv sync` returns, split into northd and ovn-controller parts by NB_Global's
# timestamps; (c) OpenFlow flows in br-int; (d) peak RSS and CPU per daemon; (e) incremental
# latency of one pod joining a port group. The OVS ports exist (unbound) before (a), so (b)
# includes binding them. "valid: no" says ovn-controller lost its OpenFlow connection during
# (b) and started over; that happens on this 2-core machine at PODS=5000 POLICIES=1000, where
# one ovn-controller iteration outlasts ovs-vswitchd's 60 s echo timeout on br-int.mgmt.
set -euo pipefail

PODS=${PODS:-1000} POLICIES=${POLICIES:-200} PORT_TYPE=${PORT_TYPE:-internal} INCR=${INCR:-5}
BUNDLE_IDLE_TIMEOUT=${BUNDLE_IDLE_TIMEOUT:-180}   # seconds; ovn-kubernetes sets 180
((PODS >= 10 && POLICIES >= 1 && INCR >= 1)) || { echo "need PODS >= 10, POLICIES, INCR >= 1" >&2; exit 2; }
D=${OVN_WORKDIR:-/tmp/syob-ovn} NS=${OVN_NETNS:-syobovn}   # the services bench passes its own
export OVS_RUNDIR=$D OVS_DBDIR=$D OVS_LOGDIR=$D OVS_SYSCONFDIR=$D \
       OVN_RUNDIR=$D OVN_DBDIR=$D OVN_LOGDIR=$D OVN_SYSCONFDIR=$D
unset OVN_NB_DAEMON
DAEMONS="ovn-nbctl ovn-controller ovn-northd ovs-vswitchd ovsdb-sb ovsdb-nb ovsdb-ovs" # stop order

vsctl() { ovs-vsctl --db="unix:$D/ovs.sock" --timeout=900 "$@"; }
nbctl() { ovn-nbctl --timeout=1800 "$@"; }   # through the ovn-nbctl daemon once it is up
sbctl() { ovn-sbctl --db="unix:$D/sb.sock" --timeout=120 "$@"; }
ofctl() { ovs-ofctl -O OpenFlow15 "$1" "unix:$D/br-int.mgmt" "${@:2}"; }
secs()  { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
log()   { echo "[$(date +%T)] $*" >&2; }
# ovn-controller wipes br-int's flows and recomputes all of them each time it (re)connects.
reconnects() { grep -c 'OVS OpenFlow connection reconnected' "$D/ovn-controller.log" || true; }

# Detached daemons are children of PID 1, which may be slow to reap them: a zombie is dead.
alive() { [[ -e /proc/$1 ]] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }
ours()  { [[ -r /proc/$1/cmdline ]] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -qF "$D/"; }
monitor_of() { # the --monitor parent of daemon $1, if it has one (its title says so)
    local ppid
    ppid=$(awk '/^PPid:/ { print $2 }' "/proc/$1/status" 2>/dev/null) || return 1
    tr '\0' ' ' <"/proc/$ppid/cmdline" 2>/dev/null | grep -q "monitoring pid $1 " && echo "$ppid"
}
stop_pid() {
    local i
    kill "$1" 2>/dev/null || true
    for i in {1..100}; do alive "$1" || return 0; sleep 0.1; done
    kill -9 "$1" 2>/dev/null || true
}
stop_all() { # stop the daemons of this or an earlier run, by pidfile, then drop the netns
    local name pid mon
    for name in $DAEMONS; do
        [[ -f $D/$name.pid ]] || continue
        pid=$(<"$D/$name.pid")
        if ours "$pid"; then # only a process of ours: its command line names the work dir
            if mon=$(monitor_of "$pid"); then stop_pid "$mon"; fi # or it would restart the child
            stop_pid "$pid"
        fi
        rm -f "$D/$name.pid"
    done
    if ip netns list | grep -qw "^$NS"; then ip netns del "$NS"; fi
}
descendants() { # PIDs under $1, leaving out the subtree of $2
    local c
    for c in $(ps -o pid= --ppid "$1"); do [[ $c == "$2" ]] || { descendants "$c" "$2"; echo "$c"; }; done
}
watchdog() { # a daemon that dies would leave a --wait hanging: name it and stop our clients
    local me=$BASHPID name pid
    local -A watch
    for name in $DAEMONS; do # a --monitor parent outlives (and restarts) a crashed child
        pid=$(<"$D/$name.pid"); watch[$name]=$(monitor_of "$pid" || echo "$pid")
    done
    while sleep 1 && alive $$; do # ends with the script, however that ends
        for name in "${!watch[@]}"; do
            alive "${watch[$name]}" && continue
            echo "ovn-baseline: $name died; see $D/$name.log" >&2
            kill $(descendants $$ "$me") 2>/dev/null
            return 0
        done
    done
}
cleanup() {
    local rc=$?
    if [[ -n ${WATCHDOG:-} ]]; then kill "$WATCHDOG" 2>/dev/null || true; fi
    stop_all
    if ((rc != 0)); then echo "ovn-baseline: FAILED (exit $rc); logs in $D" >&2
    elif [[ ${KEEP:-0} != 1 ]]; then rm -rf "$D"; fi
}

stop_all; rm -rf "$D"; mkdir -p "$D"
trap cleanup EXIT; trap 'exit 130' INT TERM
T_START=$EPOCHREALTIME LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)  # the host is shared: record its load

# ---- 1. Sandbox: three ovsdb-servers, ovs-vswitchd (own netns), northd, one chassis --------
log "starting sandbox in $D"
ovsdb-tool create "$D/ovs.db" /usr/share/openvswitch/vswitch.ovsschema
ovsdb-tool create "$D/nb.db" /usr/share/ovn/ovn-nb.ovsschema
ovsdb-tool create "$D/sb.db" /usr/share/ovn/ovn-sb.ovsschema
for db in ovs nb sb; do
    ovsdb-server --detach --no-chdir --pidfile="$D/ovsdb-$db.pid" -vconsole:off --log-file="$D/ovsdb-$db.log" \
        --unixctl="$D/ovsdb-$db.ctl" --remote="punix:$D/$db.sock" "$D/$db.db"
done
vsctl --no-wait init
ip netns add "$NS"
ip netns exec "$NS" ovs-vswitchd --detach --no-chdir --pidfile="$D/ovs-vswitchd.pid" \
    -vconsole:off --log-file="$D/ovs-vswitchd.log" --unixctl="$D/ovs-vswitchd.ctl" \
    $([[ $PORT_TYPE == dummy ]] && echo --enable-dummy) "unix:$D/ovs.sock"
# br-int exists, on the userspace datapath, before ovn-controller first looks for it. The
# chassis settings are ovn-kubernetes' (node setup): with the OVS default bundle-idle-timeout
# of 10 s, ovn-controller's long iterations at 1000 pods let vswitchd expire a half-sent
# flow bundle; ovn-controller then reconnects and reinstalls every flow.
vsctl add-br br-int -- set Bridge br-int datapath_type=netdev fail_mode=secure \
    other_config:disable-in-band=true \
    -- set Open_vSwitch . external_ids:system-id=chassis-1 \
    external_ids:ovn-remote="unix:$D/sb.sock" external_ids:ovn-encap-type=geneve \
    external_ids:ovn-encap-ip=127.0.0.1 external_ids:ovn-bridge=br-int \
    external_ids:ovn-monitor-all=true external_ids:ovn-openflow-probe-interval=180 \
    external_ids:ovn-remote-probe-interval=100000 other_config:bundle-idle-timeout="$BUNDLE_IDLE_TIMEOUT"
ovn-northd --detach --no-chdir --pidfile="$D/ovn-northd.pid" -vconsole:off --log-file="$D/ovn-northd.log" \
    --unixctl="$D/ovn-northd.ctl" --ovnnb-db="unix:$D/nb.sock" --ovnsb-db="unix:$D/sb.sock"
# --monitor (as ovn-ctl starts it): ovn-controller 23.03.1 here segfaults now and then right
# after connecting to br-int (seen in ~1 of 10 starts, not reproducible on demand).
ovn-controller --detach --monitor --no-chdir --pidfile="$D/ovn-controller.pid" \
    -vconsole:off --log-file="$D/ovn-controller.log" "unix:$D/ovs.sock"
sbctl wait-until Chassis chassis-1
# ovn-nbctl daemon: keeps one replica of the NB DB, as ovn-kubernetes' libovsdb cache does,
# so no command pays for downloading the database first.
OVN_NB_DAEMON=$(ovn-nbctl --db="unix:$D/nb.sock" --detach --no-chdir \
    --pidfile="$D/ovn-nbctl.pid" -vconsole:off --log-file="$D/ovn-nbctl.log")
export OVN_NB_DAEMON
ovn-nbctl --timeout=120 --wait=hv sync   # the chassis is up and has caught up
watchdog & WATCHDOG=$!

# The services benchmark's workload (WORKLOAD=lb, benches/ovn_lb.sh) shares this sandbox.
if [[ ${WORKLOAD:-policy} == lb ]]; then
    source "$(dirname "${BASH_SOURCE[0]}")/ovn_lb.sh"
    exit 0
fi

# ---- 2. Generate the workload (not timed) ---------------------------------------------------
# Commands go one argument per line into chunk files $D/<kind>.NNN; apply() runs each chunk
# as one ovs-vsctl / ovn-nbctl invocation, i.e. one transaction (argv is limited to 2 MiB).
# Rows are created by UUID, never looked up by name: ovn-nbctl and ovs-vsctl find a row by
# name with a linear scan, which at 5000 pods costs minutes of client CPU and would be
# charged to OVN (ovn-kubernetes refers to rows by UUID from its cache).
log "generating PODS=$PODS POLICIES=$POLICIES"
chunk() { exec 3>"$D/$1.$(printf %03d "$2")"; }
cmd() { printf '%s\n' -- "$@" >&3; } # an arg holding newlines becomes several args
apply() { local f a; for f in "$D/$1".[0-9]*; do mapfile -t a <"$f"; "${@:2}" "${a[@]}" >/dev/null; done; }

declare -a IP MAC
for ((j = 0; j < PODS + INCR; j++)); do
    n=$((j + 2))
    IP[j]=10.244.$((n >> 8)).$((n & 255))
    printf -v m '0a:58:0a:f4:%02x:%02x' $((n >> 8)) $((n & 255)); MAC[j]=$m
done
PER=1000 # pods per ovs-vsctl / ovn-nbctl invocation
for ((c = 0; c * PER < PODS; c++)); do
    lo=$((c * PER)) hi=$(((c + 1) * PER < PODS ? (c + 1) * PER : PODS))
    chunk nbpods $c; refs=()
    if ((c == 0)); then cmd ls-add ls0; fi
    for ((j = lo; j < hi; j++)); do
        cmd --id=@p$j create Logical_Switch_Port name=pod$j \
            addresses="\"${MAC[j]} ${IP[j]}\"" port_security="\"${MAC[j]} ${IP[j]}\""
        refs+=(@p$j)
    done
    cmd add Logical_Switch ls0 ports "${refs[@]}"
    chunk ovs $c; refs=()
    for ((j = lo; j < hi; j++)); do
        cmd --id=@i$j create Interface name=pod$j type="$PORT_TYPE" external_ids:iface-id=pod$j
        cmd --id=@p$j create Port name=pod$j interfaces=@i$j
        refs+=(@p$j)
    done
    cmd add Bridge br-int ports "${refs[@]}"
done
exec 3>&-
gen_policies() { # needs the LSPs' UUIDs, so it runs once they exist
    local -A uuid
    local -a pgm asm
    local name u r i c=0 n=0
    while IFS=, read -r name u; do uuid[$name]=$u; done < <(nbctl --format=csv --data=bare \
        --no-headings --columns=name,_uuid list Logical_Switch_Port)
    for ((j = 0; j < PODS; j++)); do # per residue j%10: LSP UUIDs (one per line), quoted IPs
        r=$((j % 10))
        pgm[r]+=${pgm[r]:+$'\n'}${uuid[pod$j]}
        asm[r]+=${asm[r]:+,}\"${IP[j]}\"
    done
    chunk nbpol 0
    for ((i = 0; i < POLICIES; i++)); do
        if (((n += PODS / 10) > 20000)); then chunk nbpol $((++c)); n=$((PODS / 10)); fi # ~800 KiB
        cmd pg-add pg_$i "${pgm[i % 10]}"
        cmd create Address_Set name=as_$i "addresses=${asm[(i + 1) % 10]}"
        cmd --type=port-group acl-add pg_$i to-lport 1001 \
            "outport == @pg_$i && ip4.src == \$as_$i && tcp.dst == {80,443}" allow-related
        cmd --type=port-group acl-add pg_$i to-lport 1001 "outport == @pg_$i && arp" allow
        cmd --type=port-group acl-add pg_$i to-lport 1000 "outport == @pg_$i" drop
    done
    exec 3>&-
}

# ---- 3. Measure -----------------------------------------------------------------------------
log "creating $PODS OVS $PORT_TYPE ports"
t0=$EPOCHREALTIME
apply ovs vsctl                          # ovs-vsctl returns once ovs-vswitchd applied it
t1=$EPOCHREALTIME
nbctl --wait=hv sync                     # let ovn-controller see the (still unbound) ports
log "$PODS OVS ports in $(secs "$t0" "$t1") s; applying NB config"
R0=$(reconnects) t2=$EPOCHREALTIME
apply nbpods nbctl                       # (a) NB transactions, no waiting: pods, then
tA=$EPOCHREALTIME
gen_policies                             #     (untimed: look up the pods' UUIDs)
tB=$EPOCHREALTIME
apply nbpol nbctl                        #     policies
t3=$EPOCHREALTIME
log "NB applied; waiting for --wait=hv"
nbctl --wait=hv sync                     # (b) northd + ovn-controller + vswitchd
t4=$EPOCHREALTIME
# Split (b): northd stamps NB_Global when it has written the SB for this nb_cfg (sb_cfg)
# and when every chassis reported it installed (hv_cfg); milliseconds since the epoch.
{ read -r SB_TS; read -r HV_TS; } < <(nbctl get NB_Global . sb_cfg_timestamp hv_cfg_timestamp)
log "realized in $(secs "$t3" "$t4") s; counting"

# (c) flows in br-int, total and per table ("table:count ...").
FLOWS=$(ofctl dump-aggregate | sed -n 's/.*flow_count=\([0-9]*\).*/\1/p')
BY_TABLE=$(ofctl dump-flows | sed -n 's/.* table=\([0-9]*\),.*/\1/p' | sort -n | uniq -c |
    awk '{ printf "%s%s:%s", sep, $2, $1; sep = " " }')
OF_RESETS=$(($(reconnects) - R0))         # during (a) and (b); see "valid" below
LFLOWS=$(sbctl --bare --columns=_uuid list Logical_Flow | grep -c .)
BOUND=$(vsctl --bare --columns=name find Interface 'external_ids:ovn-installed="true"' | grep -c .)

# (d) peak RSS (VmHWM) and CPU time so far, per daemon.
HZ=$(getconf CLK_TCK) PROC=""
for name in ovn-northd ovn-controller ovs-vswitchd ovsdb-nb ovsdb-sb ovn-nbctl; do
    pid=$(<"$D/$name.pid")
    PROC+="peak_rss_mib_$name: $(awk '/^VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$pid/status")"$'\n'
    PROC+="cpu_s_$name: $(awk -v hz="$HZ" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$pid/stat")"$'\n'
done

# (e) incremental, INCR samples each: an existing pod joins pg_0 (pods 1..INCR are not in
# it), and a new pod (OVS port first, as a CNI would) gets its LSP and joins pg_<k>.
log "incremental samples"
nbctl --wait=hv sync >/dev/null           # settle: ovn-controller may still be busy after (b)
EXIST="" NEW=""
for ((k = 0; k < INCR; k++)); do
    uuid=$(nbctl --bare --columns=_uuid find Logical_Switch_Port name=pod$((k + 1)))
    s=$EPOCHREALTIME; nbctl --wait=hv add Port_Group pg_0 ports "$uuid"
    EXIST+=" $(secs "$s" "$EPOCHREALTIME")"
    j=$((PODS + k))
    vsctl add-port br-int pod$j -- set Interface pod$j type="$PORT_TYPE" external_ids:iface-id=pod$j
    s=$EPOCHREALTIME
    nbctl --wait=hv -- --id=@p create Logical_Switch_Port name=pod$j \
        addresses="\"${MAC[j]} ${IP[j]}\"" port_security="\"${MAC[j]} ${IP[j]}\"" \
        -- add Logical_Switch ls0 ports @p -- add Port_Group pg_$((k % POLICIES)) ports @p >/dev/null
    NEW+=" $(secs "$s" "$EPOCHREALTIME")"
done
stats() { tr ' ' '\n' <<<"$1" | grep . | sort -n |
    awk '{ v[NR] = $1 } END { printf "median=%s min=%s max=%s", v[int((NR + 1) / 2)], v[1], v[NR] }'; }

# A reconnect during (b) (a bundle expired, vswitchd dropped ovn-controller after 60 s without
# an answer to its echo request, or a crash) wiped the flows, and OVN 23.03 then reported
# hv_cfg before they were back (seen twice: 11 flows in br-int right after --wait=hv).
VALID="yes"
if ((OF_RESETS > 0)); then
    VALID="no: ovn-controller reconnected to br-int $OF_RESETS time(s) during (b); realize_hv_s"
    VALID+=" is a lower bound and the flow count may be incomplete"
fi

# ---- 4. Results -----------------------------------------------------------------------------
cat <<EOF
pods: $PODS
policies: $POLICIES
port_type: $PORT_TYPE
ovs_ports_create_s: $(secs "$t0" "$t1")
nb_apply_s: $(awk -v a="$(secs "$t2" "$tA")" -v b="$(secs "$tB" "$t3")" 'BEGIN { printf "%.3f", a + b }')
nb_transactions: $(ls "$D"/nbpods.[0-9]* "$D"/nbpol.[0-9]* | wc -l)
realize_hv_s: $(secs "$t3" "$t4")
nb_apply_plus_realize_s: $(secs "$t2" "$t4")
realize_northd_s: $(secs "$t3" "$(awk -v t="$SB_TS" 'BEGIN { printf "%.3f", t / 1000 }')")
realize_controller_s: $(awk -v a="$SB_TS" -v b="$HV_TS" 'BEGIN { printf "%.3f", (b - a) / 1000 }')
ports_ovn_installed: $BOUND
ovn_controller_openflow_reconnects: $OF_RESETS
ovn_controller_crashes: $(grep -c 'crashes: pid' "$D/ovn-controller.log" || true)
logical_flows: $LFLOWS
openflow_flows: $FLOWS
openflow_flows_by_table: $BY_TABLE
${PROC}incr_existing_pod_to_pg_s: $(stats "$EXIST")
incr_new_pod_to_pg_s: $(stats "$NEW")
openflow_flows_end: $(ofctl dump-aggregate | sed -n 's/.*flow_count=\([0-9]*\).*/\1/p')
ovn_controller_openflow_reconnects_end: $(($(reconnects) - R0))
valid: $VALID
total_run_s: $(secs "$T_START" "$EPOCHREALTIME")
host_loadavg_start: $LOAD_START
host_loadavg_end: $(cut -d' ' -f1-3 /proc/loadavg)
EOF
