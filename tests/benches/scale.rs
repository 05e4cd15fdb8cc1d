//! Scale benchmark of the controller core: one controller (state task + one agent per node)
//! against simulated switches, at two cluster sizes, so the ratio shows whether per-event
//! cost grows with the cluster.
//!
//! `cargo bench -p switchyard-tests --bench scale` (1000 nodes × 100 pods by default;
//! `SCALE_NODES`, `SCALE_PODS_PER_NODE`, `SCALE_SMALL_NODES` (10), `SCALE_EVENTS` (500),
//! `SCALE_NODE_EVENTS` (100) change it).
//!
//! How the switches are simulated: a child process (this same binary, `SCALE_ROLE=switches`)
//! runs one `SimSwitch` per node — a real OpenFlow 1.3 endpoint speaking through the
//! project's codec, accepting bundles and keeping a flow table — each dialling the
//! controller's listener with the datapath id of its node, exactly as br-int does. The
//! switches live in their own process so the controller's peak RSS is its own. OVSDB is
//! simulated inside the agents (`SwitchDb::Simulated`): every attached pod's port is taken
//! as present with an ofport numbered as vswitchd would; OVSDB per pod is per-node work
//! and is measured by the `ovsdb_client` benchmark.
//!
//! Cold start is a controller restart: every Node and Pod arrives as the source's first
//! batch, every node's attachments are restored (as agents do from OVSDB), and every switch
//! — already running, as vswitchd is — connects holding nothing as soon as its node is
//! known, so agents realise while pods and attachments still load. Events are timed from the delta handed to the state task to
//! the commit reply of the bundle on the node(s) it concerns (the agent's `realised`
//! counter). A label change changes no flows yet (no policy), so it is timed to the agent
//! having recomputed the pod (its realised version).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use switchyard::controller::Core;
use switchyard::ipam::mac_for;
use switchyard::source::k8s_openapi::api::core::v1::{
    Node, NodeAddress, NodeSpec, NodeStatus, Pod, PodSpec,
};
use switchyard::source::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use switchyard::source::{Delta, Kind, Object, ObjectKey};
use switchyard::switch_config::{PodPort, datapath_id};

/// The controller binary's allocator (controller/src/main.rs), so the figures are its own.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn node_name(i: usize) -> String {
    format!("node-{i}")
}

fn node_object(i: usize) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(node_name(i)),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: Some(format!("10.{}.{}.0/24", 1 + i / 256, i % 256)),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            addresses: Some(vec![NodeAddress {
                type_: "InternalIP".into(),
                address: format!("172.16.{}.{}", i / 250, 1 + i % 250),
            }]),
            ..Default::default()
        }),
    }
}

fn pod_object(node: usize, j: usize, label: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("p-{node}-{j}")),
            namespace: Some(format!("ns-{}", j % 10)),
            labels: Some(BTreeMap::from([("app".to_string(), label.to_string())])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node_name(node)),
            ..Default::default()
        }),
        status: None,
    }
}

fn pod_key(node: usize, j: usize) -> ObjectKey {
    ObjectKey::new(format!("ns-{}", j % 10), format!("p-{node}-{j}"))
}

fn pod_ip(node: usize, j: usize) -> Ipv4Addr {
    Ipv4Addr::new(
        10,
        (1 + node / 256) as u8,
        (node % 256) as u8,
        (2 + j) as u8,
    )
}

fn port(node: usize, j: usize) -> PodPort {
    let ip = pod_ip(node, j);
    PodPort {
        iface: format!("v{node}x{j}"),
        pod: pod_key(node, j),
        ip,
        mac: mac_for(ip),
        container_id: format!("c-{node}-{j}"),
    }
}

fn peak_rss_mib() -> f64 {
    status_mib("VmHWM:")
}

fn rss_mib() -> f64 {
    status_mib("VmRSS:")
}

fn status_mib(key: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// CPU seconds (user + system) this process has used: the controller's own work, apart
/// from the switch farm's in its own process. /proc reports clock ticks of USER_HZ (100).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

struct Latencies {
    ms: Vec<f64>,
    nodes_touched: Vec<usize>,
}

impl Latencies {
    fn new() -> Latencies {
        Latencies {
            ms: vec![],
            nodes_touched: vec![],
        }
    }
    fn p(&self, p: f64) -> f64 {
        let mut v = self.ms.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        percentile(&v, p)
    }
    fn touched(&self) -> String {
        let mut v = self.nodes_touched.clone();
        v.sort_unstable();
        v.dedup();
        format!("{v:?}")
    }
}

struct Figures {
    nodes: usize,
    pods: usize,
    cold_start_s: f64,
    cold_start_cpu_s: f64,
    state_rss_mib: f64,
    rss_after_cold_start_mib: f64,
    peak_rss_mib: f64,
    flows_per_node: usize,
    total_flows: usize,
    pod_add: Latencies,
    pod_delete: Latencies,
    label: Latencies,
    node_add: Latencies,
}

/// Total bundles committed per agent, by node.
fn bundles(core: &Core) -> BTreeMap<String, u64> {
    let agents = core.agents.lock().unwrap();
    agents
        .iter()
        .map(|(n, a)| (n.clone(), a.realised.borrow().bundles))
        .collect()
}

fn touched(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> usize {
    after
        .iter()
        .filter(|(n, b)| before.get(*n).is_some_and(|x| x < b))
        .count()
}

/// Waits until the agent of `node` has committed more than `after` bundles.
async fn bundle_on(core: &Core, node: &str, after: u64) {
    let mut rx = core.agents.lock().unwrap()[node].realised.clone();
    while rx.borrow_and_update().bundles <= after {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Waits until the agent of `node` has realised state version `version`.
async fn realised_version(core: &Core, node: &str, version: u64) {
    let mut rx = core.agents.lock().unwrap()[node].realised.clone();
    while rx.borrow_and_update().version < version {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

async fn next_version(
    snapshots: &mut tokio::sync::watch::Receiver<switchyard::state::Snapshot>,
    above: u64,
) -> u64 {
    loop {
        let v = snapshots.borrow_and_update().version;
        if v > above {
            return v;
        }
        if snapshots.changed().await.is_err() {
            return v;
        }
    }
}

async fn measure(nodes: usize, per_node: usize, events: usize, node_events: usize) -> Figures {
    let dir = tempfile::tempdir().expect("temp dir");
    let sim = switchyard_tests::sim_core::SimulatedCore::start(dir.path()).await;
    let (core, deltas) = (sim.core.clone(), sim.deltas.clone());

    // Cold start.
    let started = Instant::now();
    let cpu_at_start = cpu_seconds();
    // Nodes first, then each node's pods in a batch of their own: a source delivers what
    // it holds; building all 100k Pod objects at once would only measure the bench.
    deltas
        .send(
            (0..nodes)
                .map(|i| Delta::Apply(Object::from(node_object(i))))
                .collect(),
        )
        .unwrap();
    let mut snaps = core.state.subscribe();
    while snaps.borrow_and_update().node_count() < nodes {
        snaps.changed().await.unwrap();
    }
    // The switches are running, as every node's vswitchd is when a controller restarts:
    // each dials in as soon as its node's agent exists, and the agents realise while the
    // state is still loading (pods, then attachments), as they would in a cluster.
    let mut farm = std::process::Command::new(std::env::current_exe().unwrap())
        .env("SCALE_ROLE", "switches")
        .env("SCALE_TARGET", &sim.target)
        .env("SCALE_NODES", nodes.to_string())
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("start the switch farm");
    for i in 0..nodes {
        let batch = (0..per_node)
            .map(|j| Delta::Apply(Object::from(pod_object(i, j, "a"))))
            .collect();
        deltas.send(batch).unwrap();
        // Wait until the state has taken it: the Pod objects themselves are the source's
        // (a reflector's store), not the controller core's, and are not measured here.
        while snaps.borrow_and_update().pod_count() < (i + 1) * per_node {
            snaps.changed().await.unwrap();
        }
    }
    let mut snapshots = core.state.subscribe();
    while {
        let snap = snapshots.borrow_and_update();
        snap.node_count() < nodes || snap.pod_count() < nodes * per_node
    } {
        snapshots.changed().await.unwrap();
    }
    use switchyard::agent::StatePort;
    for i in 0..nodes {
        core.state
            .restore_attachments(&node_name(i), (0..per_node).map(|j| port(i, j)).collect())
            .await
            .expect("the state task takes the attachments");
    }
    let state_rss_mib = rss_mib();
    let state_loaded_s = started.elapsed().as_secs_f64();
    // Every agent ready with its whole pipeline on its switch.
    let expected_pod_flows = 7 * per_node;
    loop {
        let done = {
            let agents = core.agents.lock().unwrap();
            agents.len() == nodes
                && agents.values().all(|a| {
                    let s = a.status.borrow();
                    s.ready
                        && s.flows_installed == s.flows_desired
                        && s.flows_desired > expected_pod_flows
                })
        };
        if done {
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            let agents = core.agents.lock().unwrap();
            let ready = agents.values().filter(|a| a.status.borrow().ready).count();
            let sample: Vec<String> = agents
                .iter()
                .take(3)
                .map(|(n, a)| format!("{n}: {:?}", *a.status.borrow()))
                .collect();
            panic!(
                "cold start incomplete after 120 s: {} agents, {ready} ready; {sample:?}",
                agents.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cold_start_s = started.elapsed().as_secs_f64();
    eprintln!(
        "  cold start phases: state loaded and attachments restored after {state_loaded_s:.2} s (the switches connected meanwhile), every switch realised {:.2} s later",
        cold_start_s - state_loaded_s
    );
    let cold_start_cpu_s = cpu_seconds() - cpu_at_start;
    let (flows_per_node, total_flows) = {
        let agents = core.agents.lock().unwrap();
        let total: usize = agents
            .values()
            .map(|a| a.status.borrow().flows_installed)
            .sum();
        (agents["node-0"].status.borrow().flows_installed, total)
    };
    let peak = peak_rss_mib();
    let rss_after_cold_start_mib = rss_mib();

    // Pod adds (object + CNI ADD), then deletes of the same pods, then label changes.
    let mut pod_add = Latencies::new();
    let mut pod_delete = Latencies::new();
    let mut label = Latencies::new();
    let extra = |e: usize| (e % nodes, per_node + 1 + e / nodes);
    for e in 0..events {
        let (i, j) = extra(e);
        let node = node_name(i);
        let before = bundles(&core);
        let t0 = Instant::now();
        deltas
            .send(vec![Delta::Apply(Object::from(pod_object(i, j, "a")))])
            .unwrap();
        let key = ObjectKey::new(format!("ns-{}", j % 10), format!("p-{i}-{j}"));
        // The CNI ADD as the shim sends it.
        let mut attached = core.state.attach(&key, &format!("v{i}x{j}"), "c").await;
        while attached.is_err() {
            tokio::task::yield_now().await;
            attached = core.state.attach(&key, &format!("v{i}x{j}"), "c").await;
        }
        bundle_on(&core, &node, before[&node]).await;
        pod_add.ms.push(t0.elapsed().as_secs_f64() * 1e3);
        pod_add
            .nodes_touched
            .push(touched(&before, &bundles(&core)));
    }
    for e in 0..events {
        let (i, j) = extra(e);
        let node = node_name(i);
        let before = bundles(&core);
        let t0 = Instant::now();
        deltas
            .send(vec![Delta::Delete(
                Kind::Pod,
                ObjectKey::new(format!("ns-{}", j % 10), format!("p-{i}-{j}")),
            )])
            .unwrap();
        bundle_on(&core, &node, before[&node]).await;
        pod_delete.ms.push(t0.elapsed().as_secs_f64() * 1e3);
        pod_delete
            .nodes_touched
            .push(touched(&before, &bundles(&core)));
    }
    for e in 0..events {
        let (i, j) = (e % nodes, e / nodes % per_node);
        let node = node_name(i);
        let before = bundles(&core);
        let v0 = core.state.snapshot().version;
        let t0 = Instant::now();
        deltas
            .send(vec![Delta::Apply(Object::from(pod_object(
                i,
                j,
                &format!("l{e}"),
            )))])
            .unwrap();
        let v = next_version(&mut snapshots, v0).await;
        realised_version(&core, &node, v).await;
        label.ms.push(t0.elapsed().as_secs_f64() * 1e3);
        label.nodes_touched.push(touched(&before, &bundles(&core)));
    }
    // Node adds: every existing node gets a flow to the new one.
    let mut node_add = Latencies::new();
    for e in 0..node_events {
        let i = nodes + e;
        let before = bundles(&core);
        let t0 = Instant::now();
        deltas
            .send(vec![Delta::Apply(Object::from(node_object(i)))])
            .unwrap();
        // Nodes added by earlier events have no switch: wait on the ones that do.
        for i in 0..nodes {
            let n = node_name(i);
            bundle_on(&core, &n, before[&n]).await;
        }
        node_add.ms.push(t0.elapsed().as_secs_f64() * 1e3);
        node_add
            .nodes_touched
            .push(touched(&before, &bundles(&core)));
    }

    drop(farm.stdin.take());
    let _ = farm.kill();
    let _ = farm.wait();
    drop(sim);
    Figures {
        nodes,
        pods: nodes * per_node,
        cold_start_s,
        cold_start_cpu_s,
        state_rss_mib,
        rss_after_cold_start_mib,
        peak_rss_mib: peak,
        flows_per_node,
        total_flows,
        pod_add,
        pod_delete,
        label,
        node_add,
    }
}

/// The child process: one simulated switch per node, until stdin closes.
fn run_switch_farm() {
    let target = std::env::var("SCALE_TARGET").expect("SCALE_TARGET");
    let nodes = env("SCALE_NODES", 1000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut switches = Vec::new();
        for i in 0..nodes {
            let sw = switchyard_tests::sim_switch::SimSwitch::connect(
                &target,
                datapath_id(&node_name(i)),
            )
            .await
            .expect("connect a simulated switch");
            switches.push(sw);
        }
        // Until the parent closes our stdin.
        let _ = tokio::task::spawn_blocking(|| {
            let mut buf = [0u8; 1];
            let _ = std::io::Read::read(&mut std::io::stdin(), &mut buf);
        })
        .await;
        drop(switches);
    });
}

fn report(f: &Figures) {
    println!(
        "scale {} nodes x {} pods: cold start {:.2} s ({:.2} s of controller CPU), peak RSS {:.0} MiB, {} flows per node, {} flows in total",
        f.nodes,
        f.pods / f.nodes.max(1),
        f.cold_start_s,
        f.cold_start_cpu_s,
        f.peak_rss_mib,
        f.flows_per_node,
        f.total_flows
    );
    println!(
        "  memory: {:.0} MiB with the state loaded (objects, addresses, attachments), {:.0} MiB once every switch holds its pipeline",
        f.state_rss_mib, f.rss_after_cold_start_mib
    );
    for (name, l) in [
        ("pod add", &f.pod_add),
        ("pod delete", &f.pod_delete),
        ("pod label change", &f.label),
        ("node add", &f.node_add),
    ] {
        println!(
            "  {name:<17} n={:<4} p50 {:>7.2} ms  p99 {:>7.2} ms  nodes touched {}",
            l.ms.len(),
            l.p(0.5),
            l.p(0.99),
            l.touched()
        );
    }
}

fn main() {
    if std::env::var("SCALE_ROLE").as_deref() == Ok("switches") {
        run_switch_farm();
        return;
    }
    let nodes = env("SCALE_NODES", 1000);
    let per_node = env("SCALE_PODS_PER_NODE", 100);
    let small = env("SCALE_SMALL_NODES", 10);
    let events = env("SCALE_EVENTS", 500);
    let node_events = env("SCALE_NODE_EVENTS", 100);
    // Two runs in one process would mix their peak RSS: the small one goes to a child.
    if std::env::var("SCALE_ROLE").as_deref() == Ok("one") {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let f = rt.block_on(measure(nodes, per_node, events, node_events));
        report(&f);
        println!(
            "figures: p99={} p50={} rss={} cold={}",
            f.pod_add.p(0.99).max(f.pod_delete.p(0.99)),
            f.pod_add.p(0.5).max(f.pod_delete.p(0.5)),
            f.peak_rss_mib,
            f.cold_start_s
        );
        return;
    }
    let run = |n: usize| -> (f64, f64, f64, f64) {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .env("SCALE_ROLE", "one")
            .env("SCALE_NODES", n.to_string())
            .env("SCALE_PODS_PER_NODE", per_node.to_string())
            .env("SCALE_EVENTS", events.to_string())
            .env("SCALE_NODE_EVENTS", node_events.min(n).to_string())
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("run one size");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        for line in text.lines().filter(|l| !l.starts_with("figures:")) {
            println!("{line}");
        }
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("figures: "))
            .unwrap_or_else(|| panic!("run at {n} nodes printed no figures:\n{text}"));
        let get = |k: &str| -> f64 {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN)
        };
        (get("p50"), get("p99"), get("rss"), get("cold"))
    };
    let (_, small_p99, _, _) = run(small);
    let (p50, p99, rss, cold) = run(nodes);
    println!(
        "scale: nodes={nodes} pods={} cold_start_s={cold:.2} peak_rss_mib={rss:.0} pod_event_p50_ms={p50:.2} pod_event_p99_ms={p99:.2} p99_ratio_vs_{small}_nodes={:.2}",
        nodes * per_node,
        p99 / small_p99
    );
}
