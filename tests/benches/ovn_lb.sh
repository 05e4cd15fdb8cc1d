# OVN's half of `cargo bench -p switchyard-tests --bench services_vs_ovn`: SERVICES load
# balancers of ENDPOINTS backends each on one logical switch, how long until ovn-controller
# has them in br-int, and how long one backend change takes (INCR samples).
#
# Not run on its own: `WORKLOAD=lb bash benches/ovn_peer.sh` sources it once its sandbox
# (ovsdb-servers, ovs-vswitchd in its namespace, ovn-northd, ovn-controller, the ovn-nbctl
# daemon, the watchdog) is up; that script's functions (vsctl, nbctl, ofctl, log, secs) and
# its cleanup (every daemon stopped by the PID in its pidfile, the namespace deleted) apply.
#
# Workload (services_vs_ovn.rs builds the same for Switchyard): Service i, 0 <= i <
# SERVICES: Load_Balancer "svc-<i>", protocol tcp, vip 10.96.<(i+1)/256>.<(i+1)%256>:80 →
# backends 10.244.<n/256>.<n%256>:8080 for n = i*ENDPOINTS + k + 2, 0 <= k < ENDPOINTS; all
# on logical switch ls0, which has one bound port (pod0, an internal port on br-int) so this
# chassis installs ls0's flows. Change k (1..INCR): LB svc-<k>'s first backend becomes
# n = SERVICES*ENDPOINTS + k + 2.
#
# Measured: nb_apply_s (the NB transactions, rows created by UUID, PER_TXN LBs each);
# realize_hv_s (then until `ovn-nbctl --wait=hv sync` returns); groups and flows in br-int;
# incr_endpoint_change_s (each change is one `ovn-nbctl --wait=hv set Load_Balancer`, its
# UUID looked up beforehand, untimed).

SERVICES=${SERVICES:-1000} ENDPOINTS=${ENDPOINTS:-10} PER_TXN=${PER_TXN:-500}
((SERVICES > INCR && ENDPOINTS >= 1)) || { echo "need SERVICES > INCR, ENDPOINTS >= 1" >&2; exit 2; }

ip4() { echo "$1.$(($2 >> 8)).$(($2 & 255))"; }
vip() { ip4 10.96 $(($1 + 1)); }
backends() { # Service $1's backends, with backend 0 replaced by n=$2 when given
    local k n out=""
    for ((k = 0; k < ENDPOINTS; k++)); do
        n=$(($1 * ENDPOINTS + k + 2))
        if ((k == 0)) && [[ -n ${2:-} ]]; then n=$2; fi
        out+=${out:+,}$(ip4 10.244 $n):8080
    done
    echo "$out"
}
groups() { ofctl dump-groups | grep -c group_id= || true; }
flows() { ofctl dump-aggregate | sed -n 's/.*flow_count=\([0-9]*\).*/\1/p'; }

# ---- One bound port, so ls0 is local to this chassis ------------------------------------
nbctl ls-add ls0 -- lsp-add ls0 pod0 -- lsp-set-addresses pod0 "0a:58:0a:f4:ff:fe 10.244.255.254"
vsctl add-port br-int pod0 -- set Interface pod0 type=internal external_ids:iface-id=pod0
nbctl --wait=hv sync
log "ls0 bound; $(flows) flows; generating SERVICES=$SERVICES ENDPOINTS=$ENDPOINTS"

# ---- Generate (not timed): chunk files of ovn-nbctl arguments, one per transaction -------
c=0
for ((lo = 0; lo < SERVICES; lo += PER_TXN)); do
    f=$D/nblb.$(printf %03d $c); c=$((c + 1)); refs=()
    : >"$f"
    for ((i = lo; i < SERVICES && i < lo + PER_TXN; i++)); do
        printf '%s\n' -- --id=@l$i create Load_Balancer name=svc-$i protocol=tcp \
            "vips:\"$(vip $i):80\"=\"$(backends $i)\"" >>"$f"
        refs+=(@l$i)
    done
    printf '%s\n' -- add Logical_Switch ls0 load_balancer "${refs[@]}" >>"$f"
done

# ---- Measure ------------------------------------------------------------------------------
R0=$(reconnects)
t0=$EPOCHREALTIME
for f in "$D"/nblb.[0-9]*; do mapfile -t a <"$f"; nbctl "${a[@]}" >/dev/null; done
t1=$EPOCHREALTIME
log "NB applied in $(secs "$t0" "$t1") s; waiting for --wait=hv"
nbctl --wait=hv sync
t2=$EPOCHREALTIME
{ read -r SB_TS; read -r HV_TS; } < <(nbctl get NB_Global . sb_cfg_timestamp hv_cfg_timestamp)
GROUPS_N=$(groups) FLOWS_N=$(flows) OF_RESETS=$(($(reconnects) - R0))
log "realized in $(secs "$t1" "$t2") s: $GROUPS_N groups, $FLOWS_N flows"

HZ=$(getconf CLK_TCK) PROC=""
for name in ovn-northd ovn-controller ovs-vswitchd ovsdb-nb ovsdb-sb; do
    pid=$(<"$D/$name.pid")
    PROC+="peak_rss_mib_$name: $(awk '/^VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$pid/status")"$'\n'
    PROC+="cpu_s_$name: $(awk -v hz="$HZ" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$pid/stat")"$'\n'
done

log "incremental samples"
nbctl --wait=hv sync >/dev/null
CHANGE="" CHANGED_OK=0
for ((k = 1; k <= INCR; k++)); do
    uuid=$(nbctl --bare --columns=_uuid find Load_Balancer name=svc-$k)
    n=$((SERVICES * ENDPOINTS + k + 2))
    s=$EPOCHREALTIME
    nbctl --wait=hv set Load_Balancer "$uuid" "vips:\"$(vip $k):80\"=\"$(backends $k $n)\""
    CHANGE+=" $(secs "$s" "$EPOCHREALTIME")"
    # Confirmed on the switch (untimed): a group's bucket names the new backend.
    if grep -qF "$(ip4 10.244 $n):8080" <<<"$(ofctl dump-groups)"; then CHANGED_OK=$((CHANGED_OK + 1)); fi
done
stats() { tr ' ' '\n' <<<"$1" | grep . | sort -n |
    awk '{ v[NR] = $1 } END { printf "median=%s min=%s max=%s", v[int((NR + 1) / 2)], v[1], v[NR] }'; }

VALID="yes"
if ((OF_RESETS > 0)); then
    VALID="no: ovn-controller reconnected to br-int $OF_RESETS time(s) during the realisation"
fi
if ((CHANGED_OK != INCR)); then
    VALID="no: only $CHANGED_OK of $INCR backend changes were found in br-int's groups"
fi

cat <<EOF
services: $SERVICES
endpoints: $ENDPOINTS
nb_apply_s: $(secs "$t0" "$t1")
nb_transactions: $c
realize_hv_s: $(secs "$t1" "$t2")
realize_northd_s: $(secs "$t1" "$(awk -v t="$SB_TS" 'BEGIN { printf "%.3f", t / 1000 }')")
realize_controller_s: $(awk -v a="$SB_TS" -v b="$HV_TS" 'BEGIN { printf "%.3f", (b - a) / 1000 }')
openflow_groups: $GROUPS_N
openflow_flows: $FLOWS_N
ovn_controller_openflow_reconnects: $OF_RESETS
${PROC}incr_endpoint_change_s: $(stats "$CHANGE")
incr_changes_seen_in_groups: $CHANGED_OK
valid: $VALID
total_run_s: $(secs "$T_START" "$EPOCHREALTIME")
host_loadavg_start: $LOAD_START
host_loadavg_end: $(cut -d' ' -f1-3 /proc/loadavg)
EOF
