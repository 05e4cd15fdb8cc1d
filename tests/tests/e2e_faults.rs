//! Faults on a running cluster, judged by what an operator would see: pings lost, flows in
//! `ovs-ofctl dump-flows`. ovs-vswitchd killed and restarted; flows added and changed by
//! hand; a switch refusing one owner's flows; invalid edits of the running cluster file.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use switchyard::pipeline::Encap;
use switchyard::source::ObjectKey;
use switchyard_demo::{DemoCluster, DemoOptions};
use switchyard_testbed::Netns;
use switchyard_tests::{require_root, workspace_binary};

fn start(yaml: &str) -> DemoCluster {
    require_root();
    DemoCluster::start(DemoOptions {
        cluster_yaml: yaml.to_owned(),
        encap: Encap::Geneve,
        controller_bin: workspace_binary("switchyard"),
        cni_bin: workspace_binary("switchyard-cni"),
    })
    .unwrap_or_else(|e| panic!("demo cluster: {e}"))
}

/// A cluster file: nodes (name, pod CIDR, InternalIP), pods (namespace, name, node).
fn cluster_yaml(nodes: &[(&str, &str, Option<Ipv4Addr>)], pods: &[(&str, &str, &str)]) -> String {
    let mut docs = Vec::new();
    for (name, cidr, ip) in nodes {
        let status = match ip {
            Some(ip) => {
                format!("status: {{addresses: [{{type: InternalIP, address: \"{ip}\"}}]}}\n")
            }
            None => String::new(),
        };
        docs.push(format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\nspec: {{podCIDR: \"{cidr}\"}}\n{status}"
        ));
    }
    for (ns, name, node) in pods {
        docs.push(format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  nodeName: {node}\n  containers: [{{name: c, image: x}}]\n"
        ));
    }
    docs.join("---\n")
}

fn key(ns: &str, name: &str) -> ObjectKey {
    ObjectKey::new(ns, name)
}

/// The flows of a node without counters, as a set (re-adding changes ovs-ofctl's order).
fn flow_set(cluster: &DemoCluster, node: &str) -> BTreeSet<String> {
    cluster
        .dump_flows(node, &["--no-stats"])
        .unwrap()
        .lines()
        .filter(|l| l.contains("table="))
        .map(|l| l.trim().to_owned())
        .collect()
}

/// A ping running in the background from a pod's namespace, one echo every `interval`.
struct Ping {
    child: Child,
    count: u32,
}

/// What a ping saw.
struct PingResult {
    count: u32,
    received: BTreeSet<u32>,
}

impl PingResult {
    fn lost(&self) -> u32 {
        self.count - self.received.len() as u32
    }
    /// True when the last `n` echoes were all answered: traffic is flowing at the end.
    fn tail_received(&self, n: u32) -> bool {
        (self.count - n + 1..=self.count).all(|s| self.received.contains(&s))
    }
}

impl Ping {
    fn start(from: &Netns, to: Ipv4Addr, interval: &str, count: u32) -> Ping {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                from.name(),
                "ping",
                "-n",
                "-i",
                interval,
                "-W",
                "1",
            ])
            .args(["-c", &count.to_string(), &to.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ping");
        Ping { child, count }
    }

    fn finish(self) -> PingResult {
        let out = self.child.wait_with_output().expect("ping ends");
        let text = String::from_utf8_lossy(&out.stdout);
        let received = text
            .lines()
            .filter_map(|l| l.split("icmp_seq=").nth(1))
            .filter_map(|s| s.split_whitespace().next()?.parse().ok())
            .collect();
        PingResult {
            count: self.count,
            received,
        }
    }
}

fn warm_up(from: &Netns, to: Ipv4Addr) {
    let ok = wait_for(Duration::from_secs(10), || {
        from.exec_output(&["ping", "-n", "-c", "1", "-W", "1", &to.to_string()])
            .is_ok_and(|o| o.status.success())
    });
    assert!(ok.is_some(), "{to} never answered a first ping");
}

fn wait_for(timeout: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if done() {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn vswitchd_killed_and_restarted_gets_its_flows_back_and_traffic_resumes() {
    switchyard_tests::skip_unless_root!();
    let yaml = cluster_yaml(
        &[
            ("vr-a", "10.246.1.0/24", None),
            ("vr-b", "10.246.2.0/24", None),
        ],
        &[("default", "a", "vr-a"), ("default", "b", "vr-b")],
    );
    let mut cluster = start(&yaml);
    let before = flow_set(&cluster, "vr-a");
    assert!(before.len() > 20, "{before:?}");
    let (a, b) = (
        &cluster.pods[&key("default", "a")],
        &cluster.pods[&key("default", "b")],
    );
    // 400 echoes, one every 50 ms: 20 s of traffic across the restart.
    warm_up(&a.netns, b.ip);
    let ping = Ping::start(&a.netns, b.ip, "0.05", 400);
    std::thread::sleep(Duration::from_secs(2));
    let killed_at = Instant::now();
    cluster.restart_vswitchd("vr-a").unwrap();
    let restarted_in = killed_at.elapsed();
    let back_in = wait_for(Duration::from_secs(60), || {
        flow_set(&cluster, "vr-a") == before
    })
    .unwrap_or_else(|| {
        panic!(
            "flows not restored after the restart:\nmissing {:?}\ncontroller log:\n{}",
            before
                .difference(&flow_set(&cluster, "vr-a"))
                .collect::<Vec<_>>(),
            cluster.controller_log_tail(30)
        )
    });
    // The controller cleared the key once the pipeline was in.
    let cleared = wait_for(Duration::from_secs(10), || {
        !cluster.nodes["vr-a"]
            .ovs
            .vsctl(&["get", "Open_vSwitch", ".", "other_config"])
            .unwrap()
            .contains("flow-restore-wait")
    });
    assert!(cleared.is_some(), "flow-restore-wait was never cleared");
    let result = ping.finish();
    eprintln!(
        "vswitchd restart: daemon and host side back in {restarted_in:?}, flows back {back_in:?} later; lost {} of {} pings (50 ms apart)",
        result.lost(),
        result.count
    );
    assert!(
        result.tail_received(40),
        "traffic did not come back: lost {} of {}",
        result.lost(),
        result.count
    );
    // Packets are lost only while vswitchd and the node's host side are down (at 50 ms per
    // echo), not for the 300 s the old cached view of the switch cost.
    assert!(
        u128::from(result.lost()) * 50 <= restarted_in.as_millis() + back_in.as_millis() + 3000,
        "lost {} pings for a restart of {restarted_in:?} + {back_in:?}",
        result.lost()
    );
}

#[test]
fn flows_added_or_changed_by_hand_are_undone_as_they_happen() {
    switchyard_tests::skip_unless_root!();
    let yaml = cluster_yaml(
        &[
            ("fh-a", "10.245.1.0/24", None),
            ("fh-b", "10.245.2.0/24", None),
        ],
        &[("default", "a", "fh-a"), ("default", "b", "fh-b")],
    );
    let cluster = start(&yaml);
    let before = flow_set(&cluster, "fh-a");
    let target = cluster.nodes["fh-a"].ovs.mgmt_target("br-int");
    let (a, b) = (
        &cluster.pods[&key("default", "a")],
        &cluster.pods[&key("default", "b")],
    );
    warm_up(&a.netns, b.ip);
    let ping = Ping::start(&a.netns, b.ip, "0.05", 200);
    std::thread::sleep(Duration::from_secs(2));
    // A drop flow above everything: what an operator might add while debugging.
    switchyard_tests::run(
        "ovs-ofctl",
        &[
            "-O",
            "OpenFlow13",
            "add-flow",
            &target,
            "table=0,priority=65000,actions=drop",
        ],
    );
    let removed_in = wait_for(Duration::from_secs(30), || {
        !cluster
            .dump_flows("fh-a", &[])
            .unwrap()
            .contains("priority=65000")
    })
    .expect("the hand-added drop flow was never removed");
    // One of ours changed in place (MODIFY leaves no FLOW_REMOVED): put back too.
    let pod_ip = a.ip.to_string();
    switchyard_tests::run(
        "ovs-ofctl",
        &[
            "-O",
            "OpenFlow13",
            "mod-flows",
            "--strict",
            &target,
            &format!("table=60,priority=200,ip,nw_dst={pod_ip},actions=drop"),
        ],
    );
    let restored_in = wait_for(Duration::from_secs(30), || {
        flow_set(&cluster, "fh-a") == before
    })
    .expect("the flow changed by hand was never restored");
    let result = ping.finish();
    eprintln!(
        "hand edits: drop flow removed in {removed_in:?}, modified flow restored in {restored_in:?}; lost {} of {} pings",
        result.lost(),
        result.count
    );
    assert!(
        result.tail_received(40),
        "lost {} of {}",
        result.lost(),
        result.count
    );
}

/// Flows in one table of a node, counted as `ovs-ofctl dump-flows` shows them.
fn table_flows(cluster: &DemoCluster, node: &str, table: &str) -> usize {
    let table = format!("table={table},");
    flow_set(cluster, node)
        .iter()
        .filter(|l| l.contains(&table))
        .count()
}

/// Controller log lines about `node` that contain `what`.
fn log_lines(cluster: &DemoCluster, node: &str, what: &str) -> Vec<String> {
    cluster
        .controller_log_tail(usize::MAX)
        .lines()
        .filter(|l| l.contains(what) && l.contains(&format!("node={node}")))
        .map(str::to_owned)
        .collect()
}

#[test]
fn flows_the_switch_refuses_leave_out_only_their_owner_and_the_node_keeps_working() {
    switchyard_tests::skip_unless_root!();
    let (node, other) = ("rf-a", "rf-b");
    let yaml = cluster_yaml(
        &[
            (node, "10.245.11.0/24", None),
            (other, "10.245.12.0/24", None),
        ],
        &[
            ("default", "a", node),
            ("default", "b", other),
            ("guarded", "c", node),
        ],
    );
    let mut cluster = start(&yaml);
    let b = cluster.pods[&key("default", "b")].ip;
    warm_up(&cluster.pods[&key("default", "a")].netns, b);
    let ping = Ping::start(&cluster.pods[&key("default", "a")].netns, b, "0.05", 300);
    // What an operator may set: a flow limit on the node's IngressRule table that refuses
    // (OFPFMFC_TABLE_FULL) any flow beyond those there now.
    let vsctl = |cluster: &DemoCluster, args: &[&str]| cluster.nodes[node].ovs.vsctl(args).unwrap();
    let table = vsctl(
        &cluster,
        &[
            "--bare",
            "--columns=_uuid",
            "find",
            "Flow_Table",
            "name=IngressRule",
        ],
    );
    let table = table.trim().to_owned();
    let before = table_flows(&cluster, node, "IngressRule");
    vsctl(
        &cluster,
        &[
            "set",
            "Flow_Table",
            &table,
            &format!("flow_limit={before}"),
            "overflow_policy=refuse",
        ],
    );
    let reconnects = log_lines(&cluster, node, "br-int connection is new").len();
    // A policy isolating c (on the limited node) and allowing TCP/80 to it: its flows go to
    // IngressRule, which is full.
    let policy = |ports: &[u16]| {
        let ports: Vec<_> = ports
            .iter()
            .map(|p| serde_json::json!({"protocol": "TCP", "port": p}))
            .collect();
        serde_json::json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "web", "namespace": "guarded"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"ipBlock": {"cidr": "10.245.0.0/16"}}], "ports": ports}]}})
    };
    cluster.apply_document(policy(&[80])).unwrap();
    wait_for(Duration::from_secs(30), || {
        !log_lines(&cluster, node, "br-int refused this owner's flows").is_empty()
    })
    .unwrap_or_else(|| panic!("no refusal logged:\n{}", cluster.controller_log_tail(40)));
    let refusals = log_lines(&cluster, node, "br-int refused this owner's flows");
    assert!(
        refusals.iter().all(|l| l.contains("OFPFMFC_TABLE_FULL")),
        "a refusal that is not the table limit:\n{}",
        refusals.join("\n")
    );
    // The node keeps taking changes: a new pod on it is attached (its CNI ADD succeeds only
    // once its flows are in) and reachable, on the same OpenFlow connection.
    let d = cluster.add_pod(&key("default", "d"), node).unwrap();
    warm_up(&cluster.pods[&key("default", "a")].netns, d);
    assert_eq!(
        log_lines(&cluster, node, "br-int connection is new").len(),
        reconnects,
        "br-int was reconnected after the refusal:\n{}",
        cluster.controller_log_tail(40)
    );
    assert!(
        log_lines(&cluster, node, "waiting for br-int to reconnect").is_empty(),
        "the refusal was taken for a connection error:\n{}",
        cluster.controller_log_tail(40)
    );
    assert_eq!(table_flows(&cluster, node, "IngressRule"), before);
    // The limit lifted and the policy changed: it is tried again and goes in.
    vsctl(&cluster, &["clear", "Flow_Table", &table, "flow_limit"]);
    cluster.apply_document(policy(&[80, 81])).unwrap();
    let in_after = wait_for(Duration::from_secs(30), || {
        table_flows(&cluster, node, "IngressRule") > before
    })
    .unwrap_or_else(|| {
        panic!(
            "the changed policy never reached IngressRule:\n{}",
            cluster.controller_log_tail(40)
        )
    });
    let result = ping.finish();
    eprintln!(
        "refused owners: {} refusal(s) logged; after the limit was lifted the policy was in within {in_after:?}; lost {} of {} pings\n{}",
        refusals.len(),
        result.lost(),
        result.count,
        refusals.join("\n")
    );
    assert_eq!(
        result.lost(),
        0,
        "pings lost while a node's switch refused flows"
    );
}

#[test]
fn invalid_edits_of_the_running_cluster_file_disturb_nothing() {
    switchyard_tests::skip_unless_root!();
    let nodes = [("ie-a", "10.244.91.0/24"), ("ie-b", "10.244.92.0/24")];
    let pods = [("default", "a", "ie-a"), ("default", "b", "ie-b")];
    let yaml = cluster_yaml(&nodes.map(|(n, c)| (n, c, None)), &pods);
    let cluster = start(&yaml);
    let ip = |n: &str| Some(cluster.nodes[n].model.internal_ip);
    let good_nodes = [
        ("ie-a", "10.244.91.0/24", ip("ie-a")),
        ("ie-b", "10.244.92.0/24", ip("ie-b")),
    ];
    let write = |text: String| {
        let file = cluster.cluster_file();
        let tmp = file.with_extension("edit");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, file).unwrap();
    };
    let flows_before: Vec<BTreeSet<String>> = ["ie-a", "ie-b"]
        .iter()
        .map(|n| flow_set(&cluster, n))
        .collect();
    let (a, b) = (
        &cluster.pods[&key("default", "a")],
        &cluster.pods[&key("default", "b")],
    );
    let ping = Ping::start(&a.netns, b.ip, "0.05", 10_000);

    let mut edits: Vec<(String, &str, &str)> = Vec::new();
    // node-2's pod CIDR becomes a /32.
    let mut n = good_nodes;
    n[1].1 = "10.244.92.0/32";
    edits.push((
        cluster_yaml(&n, &pods),
        "object=Node/ie-b",
        "field=spec.podCIDR",
    ));
    // node-2 loses its InternalIP.
    let mut n = good_nodes;
    n[1].2 = None;
    edits.push((
        cluster_yaml(&n, &pods),
        "object=Node/ie-b",
        "field=status.addresses",
    ));
    // A newcomer whose CIDR overlaps node-2's, with a name that sorts first.
    let mut with_newcomer = good_nodes.to_vec();
    with_newcomer.push((
        "aa-new",
        "10.244.92.0/25",
        Some(Ipv4Addr::new(192, 168, 200, 9)),
    ));
    edits.push((
        cluster_yaml(&with_newcomer, &pods),
        "object=Node/aa-new",
        "field=spec.podCIDR",
    ));
    // A running pod moved to a node that does not exist.
    let moved = [("default", "a", "ie-a"), ("default", "b", "nowhere")];
    edits.push((
        cluster_yaml(&good_nodes, &moved),
        "object=Pod/default/b",
        "field=spec.nodeName",
    ));

    for (text, object, field) in edits {
        write(text);
        let seen = wait_for(Duration::from_secs(20), || {
            cluster
                .controller_log_tail(200)
                .lines()
                .any(|l| l.contains(object) && l.contains(field))
        });
        assert!(
            seen.is_some(),
            "no warning naming {object} {field}:\n{}",
            cluster.controller_log_tail(20)
        );
        write(cluster_yaml(&good_nodes, &pods));
        std::thread::sleep(Duration::from_millis(700));
    }
    // Stop the ping early: kill it by its PID and count what it sent.
    let pid = nix::unistd::Pid::from_raw(ping.child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
    let out = ping.child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let received: BTreeSet<u32> = text
        .lines()
        .filter_map(|l| l.split("icmp_seq=").nth(1))
        .filter_map(|s| s.split_whitespace().next()?.parse().ok())
        .collect();
    // Counted from the first answered echo: the very first echo of a new ping (a new ICMP
    // id, a new conntrack entry on both nodes) is sometimes lost on this userspace datapath
    // with or without any edit (seen with the edits 2 s later); what matters here is that
    // working traffic is never disturbed.
    let first = received.iter().min().copied().unwrap_or(1);
    let sent = received.iter().max().copied().unwrap_or(0);
    let lost = (first..=sent).filter(|s| !received.contains(s)).count();
    eprintln!("invalid edits: {lost} of {sent} pings lost");
    assert!(sent > 40, "the ping hardly ran: {text}");
    assert_eq!(
        lost,
        0,
        "pings were lost during invalid edits:\n{text}\ncontroller log:\n{}",
        cluster.controller_log_tail(40)
    );
    for (i, n) in ["ie-a", "ie-b"].iter().enumerate() {
        assert_eq!(
            flow_set(&cluster, n),
            flows_before[i],
            "flows of {n} changed"
        );
    }
}
