//! End to end: the controller, the CNI shim and real OVS (userspace datapath) on several
//! simulated nodes, each a network namespace with its own ovsdb-server and ovs-vswitchd,
//! joined by an underlay. Pods are network namespaces attached by the real `switchyard-cni`.
//! `ping` and TCP connections between namespaces, and `ovs-ofctl dump-flows`, are the judges.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use switchyard::pipeline::Encap;
use switchyard::source::ObjectKey;
use switchyard_demo::{self as demo, DemoCluster, DemoOptions, Probe};
use switchyard_tests::{require_root, workspace_binary};

fn options(yaml: &str, encap: Encap) -> DemoOptions {
    require_root();
    DemoOptions {
        cluster_yaml: yaml.to_owned(),
        encap,
        controller_bin: workspace_binary("switchyard"),
        cni_bin: workspace_binary("switchyard-cni"),
    }
}

fn start(yaml: &str, encap: Encap) -> DemoCluster {
    DemoCluster::start(options(yaml, encap)).unwrap_or_else(|e| panic!("demo cluster: {e}"))
}

/// A cluster file with the given nodes (name, pod CIDR) and pods (namespace, name, node).
fn cluster_yaml(nodes: &[(&str, &str)], pods: &[(&str, &str, &str)]) -> String {
    let mut docs = Vec::new();
    for (name, cidr) in nodes {
        docs.push(format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\nspec: {{podCIDR: \"{cidr}\"}}\n"
        ));
    }
    for (ns, name, node) in pods {
        docs.push(format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  nodeName: {node}\n  containers: [{{name: c, image: x}}]\n"
        ));
    }
    docs.join("---\n")
}

fn assert_all_connected(probes: &[Probe]) {
    assert!(!probes.is_empty(), "no probes ran");
    let failed: Vec<&Probe> = probes.iter().filter(|p| p.failure.is_some()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} checks failed:\n{}",
        failed.len(),
        probes.len(),
        demo::render_matrix(probes)
    );
}

fn key(ns: &str, name: &str) -> ObjectKey {
    ObjectKey::new(ns, name)
}

fn pod_cookie_hex(ip: std::net::Ipv4Addr) -> String {
    format!("cookie={:#x}", switchyard::ids::pod_cookie(ip))
}

#[test]
fn bundled_cluster_pods_reach_each_other_over_geneve_and_flows_are_named() {
    switchyard_tests::skip_unless_root!();
    let cluster = start(demo::BUNDLED_CLUSTER, Encap::Geneve);
    assert_eq!(cluster.nodes.len(), 3);
    assert!(cluster.pods.len() >= 6, "pods: {}", cluster.pods.len());
    let probes = cluster.check_connectivity();
    // Every pod and node to every other pod (ICMP + each declared port), to every node
    // (ICMP + TCP 10250) and to the external client; every pod and node to the one port
    // of the bundled Service (frontend/web), once; and every pod, node and the external
    // client to its nodePort on every node, once.
    let (pods, nodes) = (cluster.pods.len(), cluster.nodes.len());
    let per_pod: usize = cluster
        .pods
        .keys()
        .map(|k| 1 + cluster.pod_ports(k).len())
        .sum();
    assert_eq!(
        probes.len(),
        (pods - 1 + nodes) * per_pod
            + nodes * (pods + nodes - 1) * 2
            + pods
            + nodes
            + pods
            + nodes
            + nodes * (pods + nodes + 1)
    );
    let to_service: Vec<_> = probes
        .iter()
        .filter(|p| p.to == "service:frontend/web")
        .collect();
    assert_eq!(to_service.len(), pods + nodes, "{to_service:?}");
    assert_all_connected(&probes);

    // Operators see table names and who owns each flow.
    let (_, pod) = cluster.pods.iter().next().expect("a pod");
    let flows = cluster.dump_flows(&pod.node, &[]).expect("dump-flows");
    for table in [
        "Classifier",
        "SpoofGuard",
        "ArpResponder",
        "L3Forwarding",
        "Output",
    ] {
        assert!(
            flows.contains(&format!("table={table}")),
            "no table={table} in:\n{flows}"
        );
    }
    // The names come from OVSDB Flow_Table through OFPMP_TABLE_FEATURES, as ovs-ofctl
    // reads them; tables Switchyard does not use have none.
    let target = cluster.nodes[&pod.node].ovs.mgmt_target("br-int");
    let names = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let conn = openflow::Connection::connect(&target)
            .await
            .expect("connect");
        conn.table_names().await.expect("table names")
    });
    let expected: std::collections::BTreeMap<u8, String> = switchyard::pipeline::Table::ALL
        .iter()
        .map(|t| (t.id(), t.name().to_owned()))
        .collect();
    assert_eq!(names, expected);
    // yardctl prints what ovs-ofctl --names prints, filters by table name included.
    for filter in [None, Some("table=SpoofGuard")] {
        let mut ours = vec![
            "ofctl",
            "dump-flows",
            "--names",
            "--no-stats",
            target.as_str(),
        ];
        let mut theirs = vec!["-O", "OpenFlow13", "dump-flows", "--names", "--no-stats"];
        theirs.push(target.as_str());
        if let Some(f) = filter {
            ours.push(f);
            theirs.push(f);
        }
        let yardctl = workspace_binary("yardctl");
        let ours = switchyard_tests::run(yardctl.to_str().unwrap(), &ours);
        let theirs = switchyard_tests::run("ovs-ofctl", &theirs);
        assert!(theirs.lines().count() >= 5, "{theirs}");
        assert_eq!(
            ours, theirs,
            "yardctl and ovs-ofctl disagree for {filter:?}"
        );
    }
    let owned = pod_cookie_hex(pod.ip);
    let pod_flows: Vec<&str> = flows.lines().filter(|l| l.contains(&owned)).collect();
    assert_eq!(pod_flows.len(), 7, "{owned} flows:\n{flows}");
    assert!(
        pod_flows
            .iter()
            .any(|l| l.contains(&format!("nw_dst={}", pod.ip))),
        "{pod_flows:?}"
    );
}

#[test]
fn pods_reach_each_other_over_vxlan() {
    switchyard_tests::skip_unless_root!();
    let yaml = cluster_yaml(
        &[("vx-a", "10.250.1.0/24"), ("vx-b", "10.250.2.0/24")],
        &[("default", "left", "vx-a"), ("default", "right", "vx-b")],
    );
    let cluster = start(&yaml, Encap::Vxlan);
    assert_all_connected(&cluster.check_connectivity());
    let node = cluster.nodes.values().next().expect("a node");
    let iface = node
        .ovs
        .vsctl(&["get", "Interface", "sy-tun0", "type"])
        .expect("tunnel type");
    assert_eq!(iface.trim(), "vxlan");
}

#[test]
fn deleting_a_pod_removes_its_port_and_flows_and_frees_its_address() {
    switchyard_tests::skip_unless_root!();
    // A /29 holds five pod addresses (network, gateway and broadcast are not given out).
    let yaml = cluster_yaml(
        &[("lc-a", "10.251.1.0/29"), ("lc-b", "10.251.2.0/24")],
        &[
            ("default", "p1", "lc-a"),
            ("default", "p2", "lc-a"),
            ("default", "p3", "lc-a"),
            ("default", "p4", "lc-a"),
            ("default", "p5", "lc-a"),
            ("default", "far", "lc-b"),
        ],
    );
    let mut cluster = start(&yaml, Encap::Geneve);
    let victim = key("default", "p3");
    let victim_ip = cluster.pods[&victim].ip;
    let owned = pod_cookie_hex(victim_ip);
    let before = cluster.dump_flows("lc-a", &[]).unwrap();
    assert_eq!(before.lines().filter(|l| l.contains(&owned)).count(), 7);
    let ports_before = cluster.nodes["lc-a"]
        .ovs
        .vsctl(&["list-ports", "br-int"])
        .unwrap();

    // The pool is full: a sixth pod on lc-a cannot get an address.
    let err = cluster
        .add_pod(&key("default", "p6"), "lc-a")
        .expect_err("a full /29 must refuse a sixth pod");
    assert!(err.to_string().contains("every address"), "{err}");
    cluster.delete_pod(&key("default", "p6")).unwrap();

    cluster.delete_pod(&victim).unwrap();
    let after = cluster.dump_flows("lc-a", &[]).unwrap();
    assert_eq!(
        after.lines().filter(|l| l.contains(&owned)).count(),
        0,
        "{after}"
    );
    assert!(!after.contains(&format!("nw_dst={victim_ip} ")), "{after}");
    let ports_after = cluster.nodes["lc-a"]
        .ovs
        .vsctl(&["list-ports", "br-int"])
        .unwrap();
    assert_eq!(
        ports_before.lines().count(),
        ports_after.lines().count() + 1,
        "before:\n{ports_before}\nafter:\n{ports_after}"
    );

    // The freed address is the only one left, so the next pod gets exactly it.
    let newcomer = cluster.add_pod(&key("default", "p7"), "lc-a").unwrap();
    assert_eq!(newcomer, victim_ip);
    // And the deleted pod can come back (with another free address: none is left but the
    // one p7 now holds, so delete p7 first).
    cluster.delete_pod(&key("default", "p7")).unwrap();
    let back = cluster.add_pod(&victim, "lc-a").unwrap();
    assert_eq!(back, victim_ip);
    assert_all_connected(&cluster.check_connectivity());
}

#[test]
fn a_node_added_later_becomes_reachable_and_concurrent_adds_get_unique_addresses() {
    switchyard_tests::skip_unless_root!();
    let yaml = cluster_yaml(
        &[("ln-a", "10.252.1.0/24")],
        &[("default", "first", "ln-a")],
    );
    let mut cluster = start(&yaml, Encap::Geneve);
    cluster.add_node("ln-b", "10.252.2.0/24").unwrap();
    let many: Vec<(ObjectKey, String)> = (0..4)
        .map(|i| (key("busy", &format!("c{i}")), "ln-b".to_owned()))
        .collect();
    let ips = cluster.add_pods_concurrently(&many).unwrap();
    let mut unique = ips.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ips.len(), "duplicate addresses: {ips:?}");
    let cidr: ipnet::Ipv4Net = "10.252.2.0/24".parse().unwrap();
    assert!(ips.iter().all(|ip| cidr.contains(ip)), "{ips:?}");
    assert_all_connected(&cluster.check_connectivity());
}

/// One line of `ovs-ofctl dump-flows`: the flow without its counters, and the counters.
fn parse_flows(dump: &str) -> BTreeMap<String, (f64, u64)> {
    let mut flows = BTreeMap::new();
    for line in dump.lines().filter(|l| l.contains("table=")) {
        let mut duration = 0.0;
        let mut packets = 0;
        let mut rest = Vec::new();
        for part in line.trim().split(", ") {
            if let Some(d) = part.strip_prefix("duration=") {
                duration = d.trim_end_matches('s').parse().unwrap_or(0.0);
            } else if let Some(n) = part.strip_prefix("n_packets=") {
                packets = n.parse().unwrap_or(0);
            } else if part.starts_with("n_bytes=") || part.starts_with("idle_age=") {
            } else {
                rest.push(part);
            }
        }
        flows.insert(rest.join(", "), (duration, packets));
    }
    flows
}

#[test]
fn controller_restart_leaves_every_flow_in_place_and_traffic_flowing() {
    switchyard_tests::skip_unless_root!();
    let yaml = cluster_yaml(
        &[("rs-a", "10.253.1.0/24"), ("rs-b", "10.253.2.0/24")],
        &[
            ("default", "x", "rs-a"),
            ("default", "y", "rs-b"),
            ("default", "z", "rs-a"),
        ],
    );
    let mut cluster = start(&yaml, Encap::Geneve);
    assert_all_connected(&cluster.check_connectivity());
    let nodes: Vec<String> = cluster.nodes.keys().cloned().collect();
    let before: BTreeMap<String, BTreeMap<String, (f64, u64)>> = nodes
        .iter()
        .map(|n| (n.clone(), parse_flows(&cluster.dump_flows(n, &[]).unwrap())))
        .collect();
    let restart_at = Instant::now();
    cluster.restart_controller().unwrap();

    // The new controller is in charge once every node's br-int has reconnected and its
    // flows were compared: STATUS answers ok only then.
    let ready = wait_status_ok(&cluster, Duration::from_secs(30));
    assert!(ready, "the restarted controller never reported ready");
    for n in &nodes {
        let after = parse_flows(&cluster.dump_flows(n, &[]).unwrap());
        let was = &before[n];
        assert_eq!(
            after.keys().collect::<Vec<_>>(),
            was.keys().collect::<Vec<_>>(),
            "node {n}: flows differ after restart"
        );
        let elapsed = restart_at.elapsed().as_secs_f64();
        for (flow, (duration, packets)) in &after {
            let (old_duration, old_packets) = was[flow];
            // A re-added flow would have a duration shorter than the time since restart.
            assert!(
                *duration >= old_duration && *duration + 0.001 >= elapsed,
                "node {n}: flow was re-added (duration {duration} < {old_duration}): {flow}"
            );
            assert!(packets >= &old_packets, "node {n}: counters reset: {flow}");
        }
    }
    assert_all_connected(&cluster.check_connectivity());
}

fn wait_status_ok(cluster: &DemoCluster, timeout: Duration) -> bool {
    use switchyard_cni::api::{Reply, Request, call};
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let reply = call(
            &cluster.cni_target(),
            &Request::Status { node: None },
            Duration::from_secs(2),
        );
        if matches!(reply, Ok(Reply::Ok(_))) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn pod_and_node_gateway_talk_and_spoofed_sources_are_dropped() {
    switchyard_tests::skip_unless_root!();
    let yaml = cluster_yaml(
        &[("sg-a", "10.254.1.0/24"), ("sg-b", "10.254.2.0/24")],
        &[("default", "honest", "sg-a"), ("default", "target", "sg-b")],
    );
    let cluster = start(&yaml, Encap::Geneve);
    let honest = &cluster.pods[&key("default", "honest")];
    let target = &cluster.pods[&key("default", "target")];
    // Pod → its node's gateway address.
    let gw = Ipv4Addr::new(10, 254, 1, 1);
    honest
        .netns
        .exec(&["ping", "-c", "1", "-W", "2", &gw.to_string()])
        .expect("pod reaches its gateway");
    // A pod that takes another address is cut off by the spoof guard.
    honest
        .netns
        .exec(&["ip", "addr", "flush", "dev", "eth0"])
        .unwrap();
    honest
        .netns
        .exec(&["ip", "addr", "add", "10.254.1.200/24", "dev", "eth0"])
        .unwrap();
    honest
        .netns
        .exec(&["ip", "route", "replace", "default", "via", &gw.to_string()])
        .unwrap();
    let spoofed = honest
        .netns
        .exec_output(&["ping", "-c", "2", "-W", "1", &target.ip.to_string()])
        .unwrap();
    assert!(!spoofed.status.success(), "a spoofed source got through");
    let flows = cluster.dump_flows("sg-a", &["table=SpoofGuard"]).unwrap();
    let default_drop = flows
        .lines()
        .find(|l| l.contains("priority=0"))
        .unwrap_or_else(|| panic!("no SpoofGuard default flow:\n{flows}"));
    let dropped: u64 = default_drop
        .split(", ")
        .find_map(|p| p.strip_prefix("n_packets="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        dropped > 0,
        "spoof guard default flow saw no packets:\n{flows}"
    );
}

#[test]
fn flows_deleted_by_hand_are_restored() {
    switchyard_tests::skip_unless_root!();
    let yaml = cluster_yaml(
        &[("dh-a", "10.249.1.0/24"), ("dh-b", "10.249.2.0/24")],
        &[("default", "one", "dh-a"), ("default", "two", "dh-b")],
    );
    let cluster = start(&yaml, Encap::Geneve);
    // ovs-ofctl lists a table's flows in the switch's internal order, which re-adding
    // changes: compare the sets of lines.
    let sorted = |dump: String| {
        let mut lines: Vec<String> = dump.lines().map(String::from).collect();
        lines.sort();
        lines
    };
    let before = sorted(cluster.dump_flows("dh-a", &["--no-stats"]).unwrap());
    let node = &cluster.nodes["dh-a"];
    let target = node.ovs.mgmt_target("br-int");
    // Let the flows age, so re-added ones are told apart by their duration.
    std::thread::sleep(Duration::from_secs(2));
    // What an operator might do by mistake: wipe a whole table.
    let wiped_at = Instant::now();
    switchyard_tests::run(
        "ovs-ofctl",
        &["-O", "OpenFlow13", "del-flows", &target, "table=60"],
    );
    // The controller may restore them before we even look: wait for the full set, then
    // check from their age that they are new flows, not survivors.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut now = Vec::new();
    while now != before && Instant::now() < deadline {
        now = sorted(cluster.dump_flows("dh-a", &["--no-stats"]).unwrap());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        now, before,
        "the controller did not restore the deleted flows"
    );
    let restored = parse_flows(&cluster.dump_flows("dh-a", &["table=60"]).unwrap());
    assert!(restored.len() >= 3, "{restored:?}");
    for (flow, (duration, _)) in &restored {
        assert!(
            *duration <= wiped_at.elapsed().as_secs_f64(),
            "this flow was never deleted: {flow}"
        );
    }
    assert_all_connected(&cluster.check_connectivity());
}

fn netns_names() -> Vec<String> {
    switchyard_tests::run("ip", &["netns", "list"])
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect()
}

fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

#[test]
fn the_demo_removes_everything_it_created_on_success_and_on_failure() {
    switchyard_tests::skip_unless_root!();
    let yaml = cluster_yaml(
        &[("cl-a", "10.248.1.0/24"), ("cl-b", "10.248.2.0/24")],
        &[("default", "p", "cl-a"), ("default", "q", "cl-b")],
    );
    let cluster = start(&yaml, Encap::Geneve);
    let prefix = cluster.netns_prefix();
    let workdir = cluster.workdir().to_owned();
    let mut pids: Vec<i32> = vec![cluster.controller_pid().expect("controller runs") as i32];
    for node in cluster.nodes.values() {
        for daemon in ["ovsdb-server", "ovs-vswitchd"] {
            let file = node.ovs.dir().join(format!("{daemon}.pid"));
            let pid = std::fs::read_to_string(&file).expect("pidfile");
            pids.push(pid.trim().parse().expect("pid"));
        }
    }
    let ours = netns_names()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .count();
    assert_eq!(
        ours,
        2 + 2 + 1 + 1,
        "nodes, pods, the underlay and the external namespace"
    );
    assert!(pids.iter().all(|p| alive(*p)));
    drop(cluster);
    let left: Vec<String> = netns_names()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    let running: Vec<&i32> = pids.iter().filter(|p| alive(**p)).collect();
    assert!(running.is_empty(), "processes left behind: {running:?}");
    assert!(!workdir.exists(), "{} left behind", workdir.display());

    // A start that fails half-way (the CNI plugin does not exist) cleans up as well.
    let yaml = cluster_yaml(
        &[("cl-fail", "10.248.3.0/24")],
        &[("default", "r", "cl-fail")],
    );
    let mut broken = options(&yaml, Encap::Geneve);
    broken.cni_bin = "/nonexistent/switchyard-cni".into();
    let err = match DemoCluster::start(broken) {
        Ok(_) => panic!("a demo without its CNI plugin must fail"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("/nonexistent/switchyard-cni"), "{err}");
    let left: Vec<String> = netns_names()
        .into_iter()
        .filter(|n| n.ends_with("-cl-fail") || n.ends_with("-default-r"))
        .collect();
    assert!(
        left.is_empty(),
        "namespaces left behind after a failed start: {left:?}"
    );
}

#[test]
fn switchyard_demo_command_checks_a_cluster_file_over_vxlan() {
    switchyard_tests::skip_unless_root!();
    require_root();
    let yaml = cluster_yaml(
        &[("cmd-a", "10.247.1.0/24"), ("cmd-b", "10.247.2.0/24")],
        &[("default", "u", "cmd-a"), ("default", "v", "cmd-b")],
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cluster.yaml");
    std::fs::write(&file, yaml).unwrap();
    // `switchyard demo` runs the switchyard-demo binary beside it: make sure it is built.
    workspace_binary("switchyard-demo");
    let out = std::process::Command::new(workspace_binary("switchyard"))
        .args(["demo", "--check", "--encap", "vxlan", "--cluster-file"])
        .arg(&file)
        .arg("--cni-bin")
        .arg(workspace_binary("switchyard-cni"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo --check failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 2 pods on 2 nodes: to the pods 3 clients each × (ICMP, TCP 80); to the nodes 3
    // clients each × (ICMP, TCP 10250); 4 clients to the external one.
    assert!(stdout.contains("28 of 28 checks passed"), "{stdout}");
    assert!(
        stdout.contains("default/u") && stdout.contains("cmd-b"),
        "{stdout}"
    );
}
