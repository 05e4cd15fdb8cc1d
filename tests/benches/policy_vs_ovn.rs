//! P2 benchmark: Switchyard against OVN on the same NetworkPolicy workload, in one run.
//!
//! `cargo bench -p switchyard-tests --bench policy_vs_ovn` (root; `PODS` (1000),
//! `POLICIES` (200), `INCR` (5) change it; `OURS_ONLY=1` skips the OVN half, for
//! profiling). Needs Debian's ovn-central and ovn-host (`apt-get install ovn-central
//! ovn-host`); without them, or without root, it says so and measures nothing.
//!
//! The workload is the one `benches/ovn_peer.sh` defines in its header (a copy of the team's
//! shared/bench/ovn-baseline.sh): PODS pods on one node, POLICIES policies, policy i selects
//! the pods with j%10 == i%10 and allows TCP 80 and 443 from the pods with
//! j%10 == (i+1)%10. As Kubernetes objects: pod j is `bench/pod<j>` with label
//! `g=<j%10>`; policy i is `bench/np-<i>`, podSelector `g=<i%10>`, policyTypes [Ingress],
//! one ingress rule from podSelector `g=<(i+1)%10>` on TCP 80 and 443.
//!
//! Switchyard's side, on a real ovs-vswitchd (userspace datapath, its own network namespace
//! `syob…`, its own ovsdb-server), so flows are counted with `ovs-ofctl dump-aggregate`
//! exactly as for OVN. The controller core (state task + node agent, as `switchyard
//! controller` runs them) runs in this process, talking real OVSDB and OpenFlow to that
//! vswitchd; its Kubernetes objects are fed as a source's deltas. Steps:
//! 1. warm-up (not timed): the Node and the Namespace; the agent creates br-int and
//!    connects; then PODS veth pairs `pod<j>`/`q<j>` are created in vswitchd's namespace
//!    (one `ip -batch`; this kernel has no dummy devices): `pod<j>` is the host end a CNI
//!    ADD hands over, `q<j>` stays beside it (no pod netns; IPv6 is disabled in the
//!    namespace first, so the veths carry no neighbour discovery and no traffic at all).
//!    (OVN's side also creates its OVS ports before its clock starts.)
//! 2. realise (timed): from handing the Pods and NetworkPolicies to the core, through the
//!    CNI ADD's state part for every pod (`StateHandle::attach`, which allocates the
//!    address), the agent adding each pod's port to br-int in OVSDB (as it does for a real
//!    CNI ADD) and vswitchd giving it an ofport, until the agent reports every pod's flows
//!    installed (what a CNI ADD waits for) and has realised the final state version with
//!    every desired flow installed (bundle commit replies from vswitchd). Not included: the
//!    CNI shim's own work (veth, netns, the unix-socket round trip) — OVN's side has no CNI
//!    either. OVN's figure is `nb_apply_s + realize_hv_s` (NB transactions, then until
//!    `ovn-nbctl --wait=hv sync`; its untimed UUID lookup is left out).
//! 3. flows: `ovs-ofctl dump-aggregate br-int` on both sides.
//! 4. peak RSS: this process's VmHWM (the controller core plus the bench's own objects,
//!    so slightly more than the controller) against the sum of ovn-northd, ovn-controller
//!    and the NB and SB ovsdb-servers; each side's ovs-vswitchd is printed too.
//! 5. incremental (INCR samples, median): pod k (k = 1..INCR) has its label changed from
//!    `g=<k%10>` to `g=0`, so it becomes selected by every policy with i%10 == 0; timed
//!    from the delta to the agent having realised that state version (the bundle's commit
//!    reply, i.e. the flows are in br-int), and confirmed afterwards (untimed) by comparing
//!    `ovs-ofctl dump-flows` before and after. This is more work than OVN's sample, which
//!    adds one port to one port group (pg_0): ours also leaves the selectors of g=k%10 and
//!    moves between address sets, so its ratio is a conservative one.
//!
//! OVN runs after our side has stopped, so the two never compete for the 2 cores; the
//! script's own output is printed as it is. The last line is
//! `p2: pods=N policies=M realise_ratio=X incr_ratio=Y flows_ratio=Z` (ours / OVN's).
//! No figure is asserted: this is a measurement.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use switchyard::agent::{AgentConfig, SwitchDb};
use switchyard::controller::Core;
use switchyard::pipeline::Encap;
use switchyard::source::k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use switchyard::source::k8s_openapi::api::networking::v1::NetworkPolicy;
use switchyard::source::{Delta, Object, ObjectKey};
use switchyard_tests::{OvsSandbox, run, run_output};

/// The controller binary's allocator (controller/src/main.rs), so the figures are its own.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NODE: &str = "node-1";
const NS: &str = "bench";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
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
        "metadata": {"name": NS, "labels": {"ns": NS}}}))
    .expect("namespace")
}

fn pod_object(j: usize, group: usize) -> Pod {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("pod{j}"), "namespace": NS,
            "labels": {"g": group.to_string()}},
        "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "pause"}]}}))
    .expect("pod")
}

fn policy_object(i: usize) -> NetworkPolicy {
    serde_json::from_value(json!({"apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": format!("np-{i}"), "namespace": NS},
    "spec": {
        "podSelector": {"matchLabels": {"g": (i % 10).to_string()}},
        "policyTypes": ["Ingress"],
        "ingress": [{
            "from": [{"podSelector": {"matchLabels": {"g": ((i + 1) % 10).to_string()}}}],
            "ports": [{"protocol": "TCP", "port": 80}, {"protocol": "TCP", "port": 443}]
        }]}}))
    .expect("policy")
}

/// VmHWM of a process, MiB.
fn peak_rss_mib(pid: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or(f64::NAN)
}

/// ovsdb-server and ovs-vswitchd (userspace datapath) in a network namespace named
/// `syob…`: the shared sandbox (stopped by the PIDs in their pidfiles on drop), with what
/// this benchmark reads of it.
struct Sandbox {
    ovs: OvsSandbox,
}

impl Sandbox {
    fn start() -> Sandbox {
        Sandbox {
            ovs: OvsSandbox::start_tagged("ob"),
        }
    }

    fn d(&self) -> String {
        self.ovs.dir().to_str().expect("utf-8 dir").to_owned()
    }

    fn ofctl(&self, subcommand: &str) -> String {
        let target = format!("unix:{}/br-int.mgmt", self.d());
        run("ovs-ofctl", &["-O", "OpenFlow13", subcommand, &target])
    }

    fn flow_count(&self) -> usize {
        let out = self.ofctl("dump-aggregate");
        out.split("flow_count=")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    /// br-int's flows without their counters, as a set.
    fn flows(&self) -> BTreeSet<String> {
        self.ofctl("dump-flows")
            .lines()
            .filter(|l| l.contains("actions="))
            .map(|l| {
                l.split(", ")
                    .filter(|f| {
                        ![
                            "duration=",
                            "n_packets=",
                            "n_bytes=",
                            "idle_age=",
                            "hard_age=",
                        ]
                        .iter()
                        .any(|p| f.trim_start().starts_with(p))
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .collect()
    }

    fn pid(&self, daemon: &str) -> String {
        std::fs::read_to_string(self.ovs.dir().join(format!("{daemon}.pid")))
            .unwrap_or_default()
            .trim()
            .to_owned()
    }
}

struct Ours {
    ports_create_s: f64,
    realise_s: f64,
    flows_agent: usize,
    flows: usize,
    flows_by_table: String,
    rss_mib: f64,
    vswitchd_rss_mib: f64,
    incr_s: Vec<f64>,
    incr_flows_changed: Vec<usize>,
}

async fn agent_state(core: &Core) -> Option<(bool, usize, usize, u64, u64)> {
    let agents = core.agents.lock().unwrap();
    agents.get(NODE).map(|a| {
        let s = a.status.borrow();
        let r = a.realised.borrow();
        (
            s.ready,
            s.flows_desired,
            s.flows_installed,
            r.version,
            r.bundles,
        )
    })
}

/// Waits until the agent is ready, has realised `version` and holds every desired flow.
async fn realised(core: &Core, version: u64, what: &str) {
    let started = Instant::now();
    loop {
        if let Some((ready, desired, installed, v, _)) = agent_state(core).await
            && ready
            && v >= version
            && desired == installed
        {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "{what}: not realised after 30 min: {:?}",
            agent_state(core).await
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn ours(pods: usize, policies: usize, incr: usize) -> Ours {
    let sb = Sandbox::start();
    let d = sb.d();
    // vswitchd connects only to unix: controllers inside its run directory.
    let mut listener = openflow::Listener::bind(&format!("punix:{d}/switchyard-controller.sock"))
        .await
        .expect("listen for br-int");
    let (deltas, delta_rx) = tokio::sync::mpsc::unbounded_channel();
    let core = Arc::new(Core::start(
        AgentConfig::new(
            SwitchDb::Ovsdb(format!("unix:{d}/db.sock")),
            format!("unix:{d}/switchyard-controller.sock"),
            Encap::Geneve,
            "netdev".into(),
        ),
        delta_rx,
    ));
    let accept = {
        let core = core.clone();
        tokio::spawn(async move {
            while let Ok(conn) = listener.accept().await {
                core.accept_switch(conn);
            }
        })
    };

    // 1. Warm-up: the node's br-int, then the pods' ports (not timed).
    deltas
        .send(vec![
            Delta::Apply(Object::from(node_object())),
            Delta::Apply(Object::from(namespace_object())),
        ])
        .unwrap();
    let v = core.state.snapshot().version;
    realised(&core, v, "warm-up").await;
    eprintln!("[ours] br-int ready; creating {pods} veth pairs for the pods");
    let t = Instant::now();
    let mut batch = String::new();
    for j in 0..pods {
        batch.push_str(&format!(
            "link add pod{j} type veth peer name q{j}\nlink set pod{j} up\nlink set q{j} up\n"
        ));
    }
    // No IPv6 in the namespace: the veths, once up, would otherwise carry neighbour
    // discovery that vswitchd must handle on every pod port (OVN's internal ports are down).
    for key in ["all", "default"] {
        sb.ovs.netns.exec(&[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{key}.disable_ipv6=1"),
        ]);
    }
    let file = sb.ovs.dir().join("links.batch");
    std::fs::write(&file, batch).expect("write the ip batch");
    sb.ovs
        .netns
        .exec(&["ip", "-batch", file.to_str().expect("utf-8 path")]);
    let ports_create_s = t.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let flows_before = sb.flow_count();
    eprintln!(
        "[ours] {pods} veth pairs in {ports_create_s:.3} s; {flows_before} flows; applying pods and policies"
    );

    // 2. Realise.
    let t0 = Instant::now();
    let mut batch: Vec<Delta> = (0..pods)
        .map(|j| Delta::Apply(Object::from(pod_object(j, j % 10))))
        .collect();
    batch.extend((0..policies).map(|i| Delta::Apply(Object::from(policy_object(i)))));
    deltas.send(batch).unwrap();
    for j in 0..pods {
        let key = ObjectKey::new(NS, format!("pod{j}"));
        let iface = format!("pod{j}");
        let container = format!("c{j}");
        while core.state.attach(&key, &iface, &container).await.is_err() {
            tokio::task::yield_now().await;
        }
    }
    let v = core.state.snapshot().version;
    realised(&core, v, "pods and policies").await;
    // Every pod's flows installed, as the CNI ADD waits for it (its port has an ofport).
    let installed = core.agents.lock().unwrap()[NODE].installed.clone();
    while installed.borrow().len() < pods {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let v = core.state.snapshot().version;
    realised(&core, v, "pods installed").await;
    let realise_s = t0.elapsed().as_secs_f64();
    let flows_agent = agent_state(&core).await.map_or(0, |s| s.2);
    let flows = sb.flow_count();
    let mut by_table: BTreeMap<u32, usize> = BTreeMap::new();
    for l in sb.ofctl("dump-flows").lines() {
        if let Some(t) = l
            .split("table=")
            .nth(1)
            .and_then(|s| s.split(',').next())
            .and_then(|s| s.parse().ok())
        {
            *by_table.entry(t).or_default() += 1;
        }
    }
    let flows_by_table = by_table
        .iter()
        .map(|(t, n)| format!("{t}:{n}"))
        .collect::<Vec<_>>()
        .join(" ");
    eprintln!("[ours] realised in {realise_s:.3} s, {flows} flows on br-int");

    // 5. Incremental: pod k joins the selectors of g=0.
    let mut incr_s = vec![];
    let mut incr_flows_changed = vec![];
    for k in 1..=incr {
        let before = sb.flows();
        let v0 = core.state.snapshot().version;
        let mut snaps = core.state.subscribe();
        let t = Instant::now();
        deltas
            .send(vec![Delta::Apply(Object::from(pod_object(k, 0)))])
            .unwrap();
        let v = loop {
            let v = snaps.borrow_and_update().version;
            if v > v0 {
                break v;
            }
            snaps.changed().await.expect("state task alive");
        };
        realised(&core, v, "label change").await;
        incr_s.push(t.elapsed().as_secs_f64());
        let after = sb.flows();
        incr_flows_changed.push(before.symmetric_difference(&after).count());
    }

    let rss_mib = peak_rss_mib("self");
    let vswitchd_rss_mib = peak_rss_mib(&sb.pid("ovs-vswitchd"));
    accept.abort();
    drop(deltas);
    drop(core);
    drop(sb);
    Ours {
        ports_create_s,
        realise_s,
        flows_agent,
        flows,
        flows_by_table,
        rss_mib,
        vswitchd_rss_mib,
        incr_s,
        incr_flows_changed,
    }
}

/// Runs the OVN side; returns its `key: value` lines.
fn ovn(pods: usize, policies: usize, incr: usize) -> BTreeMap<String, String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/ovn_peer.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .env("PODS", pods.to_string())
        .env("POLICIES", policies.to_string())
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
        "benches/ovn_peer.sh failed ({}); its logs are in /tmp/syob-ovn",
        out.status
    );
    text.lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn missing_packages() -> Vec<&'static str> {
    ["ovn-central", "ovn-host", "openvswitch-switch"]
        .into_iter()
        .filter(|p| {
            let out = run_output("dpkg-query", &["-W", "-f=${Status}", p]);
            !String::from_utf8_lossy(&out.stdout).contains("install ok installed")
        })
        .collect()
}

fn main() {
    if !switchyard_tests::is_root() {
        eprintln!(
            "policy_vs_ovn: skipped: needs root (network namespaces, its own OVS and OVN daemons)"
        );
        return;
    }
    let missing = missing_packages();
    if !missing.is_empty() {
        eprintln!(
            "policy_vs_ovn: skipped: missing Debian packages {}; install them with `apt-get install ovn-central ovn-host` (as root) and run it again",
            missing.join(" ")
        );
        return;
    }
    let pods = env("PODS", 1000);
    let policies = env("POLICIES", 200);
    let incr = env("INCR", 5).max(1);
    // Sample k moves pod k (k = 1..INCR) into g=0, as OVN's script moves pod k into pg_0:
    // pod 10 is in g=0 already, so it would change nothing and the sample never end.
    assert!(
        pods >= 10 && policies >= 1 && incr <= 9,
        "need PODS >= 10, POLICIES >= 1 and INCR <= 9 (pod 10 is in g=0 already)"
    );
    println!(
        "policy_vs_ovn: pods={pods} policies={policies} incr={incr}; host load {}",
        load()
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    let o = rt.block_on(ours(pods, policies, incr));
    drop(rt);
    println!("ours: ovs_ports_create_s: {:.3}", o.ports_create_s);
    println!("ours: realise_s: {:.3}", o.realise_s);
    println!(
        "ours: openflow_flows: {} (agent: {})",
        o.flows, o.flows_agent
    );
    println!("ours: openflow_flows_by_table: {}", o.flows_by_table);
    println!("ours: peak_rss_mib_controller: {:.1}", o.rss_mib);
    println!("ours: peak_rss_mib_ovs-vswitchd: {:.1}", o.vswitchd_rss_mib);
    println!(
        "ours: incr_label_join_s: median={:.4} samples={:?} flows_changed={:?}",
        median(&o.incr_s),
        o.incr_s
            .iter()
            .map(|s| format!("{s:.4}"))
            .collect::<Vec<_>>(),
        o.incr_flows_changed
    );

    if std::env::var("OURS_ONLY").is_ok_and(|v| v == "1") {
        // For profiling Switchyard's side: no OVN half, so no ratios and no p2 line.
        println!("OURS_ONLY=1: the OVN half is skipped");
        return;
    }
    let ovn = ovn(pods, policies, incr);
    let num = |k: &str| -> f64 {
        ovn.get(k)
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    let ovn_realise = num("nb_apply_s") + num("realize_hv_s");
    let ovn_incr = ovn
        .get("incr_existing_pod_to_pg_s")
        .and_then(|v| v.split_whitespace().find_map(|f| f.strip_prefix("median=")))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(f64::NAN);
    let ovn_flows = num("openflow_flows");
    let ovn_rss: f64 = ["ovn-northd", "ovn-controller", "ovsdb-nb", "ovsdb-sb"]
        .iter()
        .map(|d| num(&format!("peak_rss_mib_{d}")))
        .sum();
    println!(
        "compare: realise_s ours={:.3} ovn={ovn_realise:.3}; incr_median_s ours={:.4} ovn={ovn_incr:.4}; flows ours={} ovn={ovn_flows}; peak_rss_mib ours={:.1} ovn(northd+controller+nb+sb)={ovn_rss:.1} (rss_ratio={:.3}); vswitchd ours={:.1} ovn={:.1}; ovn valid: {}; host load {}",
        o.realise_s,
        median(&o.incr_s),
        o.flows,
        o.rss_mib,
        o.rss_mib / ovn_rss,
        o.vswitchd_rss_mib,
        num("peak_rss_mib_ovs-vswitchd"),
        ovn.get("valid").map_or("?", String::as_str),
        load()
    );
    println!(
        "p2: pods={pods} policies={policies} realise_ratio={:.3} incr_ratio={:.4} flows_ratio={:.3}",
        o.realise_s / ovn_realise,
        median(&o.incr_s) / ovn_incr,
        o.flows as f64 / ovn_flows
    );
}
