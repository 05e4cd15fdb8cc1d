//! P7 benchmark: Service realisation, Switchyard against OVN load balancers on the same
//! workload, in one run.
//!
//! `cargo bench -p switchyard-tests --bench services_vs_ovn` (root; `SERVICES` (1000),
//! `ENDPOINTS` (10 per Service), `INCR` (5) change it). Needs Debian's ovn-central and
//! ovn-host; without them, or without root, it says so and measures nothing.
//!
//! Workload (both sides build exactly this; `benches/ovn_lb.sh` is OVN's half):
//! - Service i, 0 <= i < SERVICES: `bench/svc-<i>`, ClusterIP 10.96.<(i+1)/256>.<(i+1)%256>,
//!   one port `http` TCP 80 → 8080;
//! - its endpoints k, 0 <= k < ENDPOINTS: with n = i*ENDPOINTS + k + 2, address
//!   10.244.<n/256>.<n%256>, port 8080, ready, on the node (one EndpointSlice per Service);
//!   in OVN, Load_Balancer `svc-<i>` (tcp) with vip `CLUSTER_IP:80` → those backends,
//!   attached to the logical switch `ls0`, which has one bound port so the chassis installs
//!   its flows (OVN installs nothing for a datapath without a local port);
//! - change k (1 <= k <= INCR): Service k's first endpoint is replaced by a new address
//!   (n = SERVICES*ENDPOINTS + k + 2): a new EndpointSlice for us, a `set Load_Balancer vips`
//!   for OVN.
//!
//! Switchyard: the controller core (state task + node agent, [`BenchCore`]) in this process
//! on a real ovs-vswitchd (userspace datapath) in its own namespace `sydpsv…`. Timed from
//! handing the Services and EndpointSlices to the core (one batch of deltas, as a source's
//! initial list delivers them) until the agent has realised that state version: every
//! group and flow committed in br-int (bundle commit replies). Then each change, from its
//! delta to its version realised. OVN: NB transactions (by UUID, several LBs per
//! transaction), then until `ovn-nbctl --wait=hv sync` returns (northd, ovn-controller
//! and vswitchd done); each change is one `ovn-nbctl --wait=hv set Load_Balancer`.
//! Both sides' groups and flows are counted with `ovs-ofctl` on br-int afterwards. Ours is
//! also split (when the state published the version; how long the agent's realisation
//! took), and set against a floor: the same groups and flows, dumped from br-int, installed
//! by `ovs-ofctl --bundle add-groups` + `--bundle add-flows` into an empty bridge of the same
//! vswitchd (untimed for the ratio; it says how much of ours is the switch's own work).
//!
//! OVN runs after our side has stopped, so the two never compete for the cores. The last
//! line is `p7: services=N endpoints=M realise_ratio=X incr_ratio=Y` (ours / OVN's). No
//! figure is asserted: this is a measurement.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Instant;

use serde_json::json;
use switchyard::source::k8s_openapi::api::core::v1::{Namespace, Node, Service};
use switchyard::source::k8s_openapi::api::discovery::v1::EndpointSlice;
use switchyard::source::{Delta, Object};
use switchyard_tests::bench_core::{BenchCore, env_usize, host_load, median, missing_packages};
use switchyard_tests::run;

/// The controller binary's allocator (controller/src/main.rs), so the figures are its own.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NODE: &str = "node-1";
const NS: &str = "bench";

fn cluster_ip(i: usize) -> Ipv4Addr {
    let n = i + 1;
    Ipv4Addr::new(10, 96, (n >> 8) as u8, (n & 255) as u8)
}

fn endpoint_ip(n: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, (n >> 8) as u8, (n & 255) as u8)
}

fn node_object() -> Node {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": NODE},
        "spec": {"podCIDR": "10.244.0.0/16", "podCIDRs": ["10.244.0.0/16"]},
        "status": {"addresses": [{"type": "InternalIP", "address": "172.16.0.1"}]}}))
    .expect("node")
}

fn namespace_object() -> Namespace {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": NS}}))
    .expect("namespace")
}

fn service_object(i: usize) -> Service {
    let ip = cluster_ip(i).to_string();
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("svc-{i}"), "namespace": NS},
        "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
            "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}]}}))
    .expect("service")
}

fn slice_object(i: usize, addresses: &[Ipv4Addr]) -> EndpointSlice {
    let endpoints: Vec<_> = addresses
        .iter()
        .map(|a| {
            json!({"addresses": [a.to_string()], "conditions": {"ready": true},
            "nodeName": NODE})
        })
        .collect();
    serde_json::from_value(
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("svc-{i}-0"), "namespace": NS,
            "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
        "endpoints": endpoints}),
    )
    .expect("endpoint slice")
}

fn endpoints_of(i: usize, m: usize) -> Vec<Ipv4Addr> {
    (0..m).map(|k| endpoint_ip(i * m + k + 2)).collect()
}

struct Ours {
    realise_s: f64,
    floor_s: (f64, f64),
    breakdown: String,
    flows: usize,
    groups: usize,
    groups_agent: usize,
    incr_s: Vec<f64>,
    incr_groups_changed: Vec<usize>,
}

/// br-int's groups as text lines, without counters.
fn group_lines(bc: &BenchCore) -> std::collections::BTreeSet<String> {
    bc.ofctl("dump-groups")
        .lines()
        .filter(|l| l.contains("group_id="))
        .map(|l| l.trim().to_owned())
        .collect()
}

/// What vswitchd alone needs for the same groups and flows: br-int's, dumped, installed
/// by `ovs-ofctl` into a new empty bridge (`--bundle add-groups`, then `--bundle
/// add-flows`, as our agent sends them in bundles), timed. The floor any controller pays
/// on this switch. Returns (floor, its add-groups part).
fn ofctl_floor(bc: &BenchCore) -> (f64, f64) {
    let d = bc.ovs.dir().to_owned();
    let br_int = bc.ovs.mgmt_target("br-int");
    let dump = |what: &str| {
        run(
            "ovs-ofctl",
            &["-O", "OpenFlow13", what, "--no-names", &br_int],
        )
    };
    let counters = [
        "duration=",
        "n_packets=",
        "n_bytes=",
        "idle_age=",
        "hard_age=",
    ];
    let flows: Vec<String> = dump("dump-flows")
        .lines()
        .filter(|l| l.contains("actions="))
        .map(|l| {
            l.split(", ")
                .filter(|f| !counters.iter().any(|p| f.trim_start().starts_with(p)))
                .collect::<Vec<_>>()
                .join(", ")
                .trim()
                .to_owned()
        })
        .collect();
    let groups: String = dump("dump-groups")
        .lines()
        .filter(|l| l.contains("group_id="))
        .map(|l| format!("{}\n", l.trim()))
        .collect();
    let gf = d.join("floor.groups");
    std::fs::write(&gf, groups).expect("write floor.groups");
    let install = |name: &str, flows: Vec<&String>| {
        let ff = d.join(format!("{name}.flows"));
        let text: String = flows.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&ff, text).expect("write the floor's flows");
        let bridge = bc.ovs.add_bridge(name);
        let of = |args: &[&str]| {
            let mut all = vec!["-O", "OpenFlow13"];
            all.extend_from_slice(args);
            run("ovs-ofctl", &all)
        };
        // The meters flows name (reject 1, audit 2), untimed: the agent installs them
        // outside its bundles when br-int connects (without them the bundle is refused).
        for meter in [
            "meter=1,pktps,band=type=drop,rate=200",
            "meter=2,pktps,band=type=drop,rate=100",
        ] {
            of(&["add-meter", &bridge, meter]);
        }
        let t = Instant::now();
        of(&[
            "--bundle",
            "add-groups",
            &bridge,
            gf.to_str().expect("utf-8"),
        ]);
        let groups_s = t.elapsed().as_secs_f64();
        of(&[
            "--bundle",
            "add-flows",
            &bridge,
            ff.to_str().expect("utf-8"),
        ]);
        let took = t.elapsed().as_secs_f64();
        bc.ovs.vsctl(&["del-br", name]);
        (took, groups_s)
    };
    install("br-floor", flows.iter().collect())
}

async fn ours(services: usize, endpoints: usize, incr: usize) -> Ours {
    let bc = BenchCore::start("dpsv", NODE).await;
    // Warm-up (not timed): the node; the agent creates br-int, connects, installs the
    // pipeline.
    let v = bc
        .apply(vec![
            Delta::Apply(Object::from(node_object())),
            Delta::Apply(Object::from(namespace_object())),
        ])
        .await;
    bc.realised(v, "warm-up").await;
    let flows_before = bc.flow_count();
    eprintln!(
        "[ours] br-int ready with {flows_before} flows; applying {services} Services × {endpoints} endpoints"
    );
    let mut batch = Vec::with_capacity(2 * services);
    for i in 0..services {
        batch.push(Delta::Apply(Object::from(service_object(i))));
        batch.push(Delta::Apply(Object::from(slice_object(
            i,
            &endpoints_of(i, endpoints),
        ))));
    }
    let t0 = Instant::now();
    let v = bc.apply(batch).await;
    let state_s = t0.elapsed().as_secs_f64();
    bc.realised(v, "Services").await;
    let realise_s = t0.elapsed().as_secs_f64();
    let (agent_took, agent_changes) = bc.last_realisation().unwrap_or_default();
    let flows = bc.flow_count();
    let groups = bc.group_count();
    let groups_agent = bc.agent_state().map_or(0, |s| s.4);
    eprintln!("[ours] realised in {realise_s:.3} s: {flows} flows, {groups} groups on br-int");
    let breakdown = format!(
        "state published its version after {state_s:.3} s; the agent's realisation took {:.3} s for {agent_changes} changes",
        agent_took.as_secs_f64()
    );
    assert!(
        groups >= services,
        "only {groups} groups on br-int for {services} Services"
    );

    let floor_s = ofctl_floor(&bc);
    let mut incr_s = vec![];
    let mut incr_groups_changed = vec![];
    for k in 1..=incr {
        let mut addresses = endpoints_of(k, endpoints);
        addresses[0] = endpoint_ip(services * endpoints + k + 2);
        let before = group_lines(&bc);
        let t = Instant::now();
        let v = bc
            .apply(vec![Delta::Apply(Object::from(slice_object(
                k, &addresses,
            )))])
            .await;
        bc.realised(v, "endpoint change").await;
        incr_s.push(t.elapsed().as_secs_f64());
        // Confirmed on the switch (untimed): the group's buckets name the new address.
        let after = group_lines(&bc);
        let changed: Vec<_> = after.difference(&before).collect();
        let new = addresses[0];
        // The bucket's DNAT names the endpoint.
        let bucket = format!("nat(dst={new}:");
        assert!(
            changed.iter().any(|l| l.contains(&bucket)),
            "change {k}: no changed group on br-int has a bucket for the new endpoint {new} ({bucket}); changed groups: {changed:?}"
        );
        incr_groups_changed.push(changed.len());
    }
    drop(bc);
    Ours {
        realise_s,
        floor_s,
        breakdown,
        flows,
        groups,
        groups_agent,
        incr_s,
        incr_groups_changed,
    }
}

/// Runs OVN's side (`benches/ovn_peer.sh` with `WORKLOAD=lb`, which sources
/// `benches/ovn_lb.sh`); returns its `key: value` lines.
fn ovn(services: usize, endpoints: usize, incr: usize) -> BTreeMap<String, String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/ovn_peer.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .env("WORKLOAD", "lb")
        .env("OVN_WORKDIR", "/tmp/sydp-ovn")
        .env("OVN_NETNS", "sydpovn")
        .env("SERVICES", services.to_string())
        .env("ENDPOINTS", endpoints.to_string())
        .env("INCR", incr.to_string())
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run benches/ovn_peer.sh");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    for l in text.lines() {
        println!("ovn: {l}");
    }
    assert!(
        out.status.success(),
        "benches/ovn_peer.sh (WORKLOAD=lb) failed ({}); its logs are in /tmp/sydp-ovn",
        out.status
    );
    text.lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn main() {
    if !switchyard_tests::is_root() {
        eprintln!(
            "services_vs_ovn: skipped: needs root (network namespaces, its own OVS and OVN daemons)"
        );
        return;
    }
    let missing = missing_packages(&["ovn-central", "ovn-host", "openvswitch-switch"]);
    if !missing.is_empty() {
        eprintln!(
            "services_vs_ovn: skipped: missing Debian packages {}; install them with `apt-get install ovn-central ovn-host` (as root) and run it again",
            missing.join(" ")
        );
        return;
    }
    let services = env_usize("SERVICES", 1000);
    let endpoints = env_usize("ENDPOINTS", 10);
    let incr = env_usize("INCR", 5).max(1);
    assert!(
        services > incr && endpoints >= 1,
        "need SERVICES > INCR and ENDPOINTS >= 1"
    );
    assert!(
        services * endpoints + incr + 2 < 65_280,
        "SERVICES × ENDPOINTS must stay below 65,000 (endpoint addresses come from 10.244.0.0/16)"
    );
    println!(
        "services_vs_ovn: services={services} endpoints={endpoints} incr={incr}; host load {}",
        host_load()
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    let o = rt.block_on(ours(services, endpoints, incr));
    drop(rt);
    println!("ours: realise_s: {:.3} ({})", o.realise_s, o.breakdown);
    println!(
        "ours: ofctl_floor_s: {:.3} (the same groups and flows by ovs-ofctl --bundle add-groups + --bundle add-flows into an empty bridge; add-groups {:.3})",
        o.floor_s.0, o.floor_s.1
    );
    println!("ours: openflow_flows: {}", o.flows);
    println!(
        "ours: openflow_groups: {} (agent: {})",
        o.groups, o.groups_agent
    );
    println!(
        "ours: incr_endpoint_change_s: median={:.4} samples={:?} groups_changed={:?}",
        median(&o.incr_s),
        o.incr_s
            .iter()
            .map(|s| format!("{s:.4}"))
            .collect::<Vec<_>>(),
        o.incr_groups_changed
    );

    let ovn = ovn(services, endpoints, incr);
    let num = |k: &str| -> f64 {
        ovn.get(k)
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    let ovn_realise = num("nb_apply_s") + num("realize_hv_s");
    let ovn_incr = ovn
        .get("incr_endpoint_change_s")
        .and_then(|v| v.split_whitespace().find_map(|f| f.strip_prefix("median=")))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(f64::NAN);
    println!(
        "compare: realise_s ours={:.3} ovn={ovn_realise:.3}; incr_median_s ours={:.4} ovn={ovn_incr:.4}; flows ours={} ovn={}; groups ours={} ovn={}; ovn valid: {}; host load {}",
        o.realise_s,
        median(&o.incr_s),
        o.flows,
        num("openflow_flows"),
        o.groups,
        num("openflow_groups"),
        ovn.get("valid").map_or("?", String::as_str),
        host_load()
    );
    println!(
        "p7: services={services} endpoints={endpoints} realise_ratio={:.3} incr_ratio={:.3}",
        o.realise_s / ovn_realise,
        median(&o.incr_s) / ovn_incr
    );
}
