//! End to end: the rest of the Kubernetes network model (issue 9, section 1) on real OVS —
//! every node's host network reaches every pod on every node without NAT, every pod reaches
//! every node's InternalIP, and every pod reaches the outside through its node, masqueraded
//! to the node's address — and the node setup that makes it so (`switchyard node-setup`),
//! which must change nothing when run again. Judged with the demo's probes (real sockets in
//! the namespaces: the servers report the source they saw), `ip`, `nft`, and the demo
//! binary's `--json` lines against the probe contract (README, `--json`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde_json::Value;
use switchyard::pipeline::Encap;
use switchyard_demo::{DemoCluster, DemoOptions, EXTERNAL_IP, ProbeResult};
use switchyard_tests::{skip_unless_root, workspace_binary};

/// Three nodes; pods on two of them, one declaring TCP and UDP ports, one declaring none
/// (it serves TCP 80).
fn cluster_yaml() -> String {
    let mut docs = Vec::new();
    for i in 1..=3 {
        docs.push(format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: n{i}}}\nspec: {{podCIDR: \"10.244.{i}.0/24\"}}\n"
        ));
    }
    docs.push(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x}\nspec:\n  nodeName: n1\n  containers: [{name: c, image: x, ports: [{containerPort: 8080}, {containerPort: 5353, protocol: UDP}]}]\n".into(),
    );
    docs.push(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: b, namespace: x}\nspec:\n  nodeName: n2\n  containers: [{name: c, image: x}]\n".into(),
    );
    docs.join("---\n")
}

fn start() -> DemoCluster {
    DemoCluster::start(DemoOptions {
        cluster_yaml: cluster_yaml(),
        encap: Encap::Geneve,
        controller_bin: workspace_binary("switchyard"),
        cni_bin: workspace_binary("switchyard-cni"),
    })
    .unwrap_or_else(|e| panic!("demo cluster: {e}"))
}

fn show(results: &[&ProbeResult]) -> String {
    results
        .iter()
        .map(|r| format!("{} ({:?})", r.json(), r.problem()))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_node_reaches_every_pod_and_pods_reach_nodes_and_the_outside() {
    skip_unless_root!();
    let cluster = start();
    let results = cluster.probe_all(1);
    let node_ip: BTreeMap<String, Ipv4Addr> = cluster
        .nodes
        .values()
        .map(|n| (format!("node:{}", n.model.name), n.model.internal_ip))
        .collect();
    let gateway: BTreeMap<String, Ipv4Addr> = cluster
        .nodes
        .values()
        .map(|n| (format!("node:{}", n.model.name), n.model.gateway_ip()))
        .collect();
    let pod_ip: BTreeMap<String, (Ipv4Addr, String)> = cluster
        .pods
        .values()
        .map(|p| (p.key.to_string(), (p.ip, format!("node:{}", p.node))))
        .collect();

    // Host network → every pod on every node (n3 has no pods: it reaches both remotely),
    // every declared port and ICMP, answered by the pod, seeing the node's gateway address:
    // no NAT.
    let host_to_pods: Vec<&ProbeResult> = results
        .iter()
        .filter(|r| r.record.from.starts_with("node:") && pod_ip.contains_key(&r.record.to))
        .collect();
    // 3 nodes × 2 pods × (ICMP + ports: a has TCP 8080 and UDP 5353, b TCP 80).
    assert_eq!(host_to_pods.len(), 3 * (3 + 2), "{}", show(&host_to_pods));
    for r in &host_to_pods {
        assert!(r.record.connected, "host → pod failed:\n{}", show(&[r]));
        if r.record.protocol != "ICMP" {
            assert_eq!(r.record.answered_by.as_deref(), Some(r.record.to.as_str()));
            assert_eq!(
                r.record.seen_source,
                Some(gateway[&r.record.from]),
                "the pod must see the node's own (gateway) address, not a NAT:\n{}",
                show(&[r])
            );
        }
    }
    assert!(
        host_to_pods.iter().any(|r| r.record.from == "node:n3"
            && r.record.to == "x/a"
            && r.record.protocol == "UDP"),
        "UDP from a node without pods to a remote pod was probed"
    );

    // Every pod → every node's InternalIP (its own node too), ICMP and TCP 10250.
    let pods_to_nodes: Vec<&ProbeResult> = results
        .iter()
        .filter(|r| pod_ip.contains_key(&r.record.from) && r.record.to.starts_with("node:"))
        .collect();
    assert_eq!(pods_to_nodes.len(), 2 * 3 * 2, "{}", show(&pods_to_nodes));
    for r in &pods_to_nodes {
        assert!(r.record.connected, "pod → node failed:\n{}", show(&[r]));
        if r.record.protocol == "TCP" {
            assert_eq!(r.record.port, 10250);
            assert_eq!(r.record.answered_by.as_deref(), Some(r.record.to.as_str()));
            let (ip, own_node) = &pod_ip[&r.record.from];
            // Its own node sees the pod; another node sees the pod's node (masquerade).
            let want = if *own_node == r.record.to {
                *ip
            } else {
                node_ip[own_node]
            };
            assert_eq!(r.record.seen_source, Some(want), "{}", show(&[r]));
        }
    }

    // Every pod and node → the outside, which sees the node's address (SNAT), and replies.
    let to_external: Vec<&ProbeResult> = results
        .iter()
        .filter(|r| r.record.to == "external")
        .collect();
    assert_eq!(to_external.len(), 2 + 3, "{}", show(&to_external));
    for r in &to_external {
        assert!(r.record.connected, "→ external failed:\n{}", show(&[r]));
        assert_eq!(r.record.answered_by.as_deref(), Some("external"));
        let node = pod_ip
            .get(&r.record.from)
            .map_or(r.record.from.clone(), |(_, n)| n.clone());
        assert_eq!(
            r.record.seen_source,
            Some(node_ip[&node]),
            "traffic leaving the cluster must carry its node's address:\n{}",
            show(&[r])
        );
        if let Some((ip, _)) = pod_ip.get(&r.record.from) {
            assert_eq!(
                r.record.from_ip,
                Some(*ip),
                "the pod's socket has its own address"
            );
        }
    }
    // Nothing else is off either (pod ↔ pod, node ↔ node).
    let wrong: Vec<&ProbeResult> = results.iter().filter(|r| r.problem().is_some()).collect();
    assert!(
        wrong.is_empty(),
        "unexpected probe results:\n{}",
        show(&wrong)
    );
    assert!(
        results
            .iter()
            .any(|r| r.record.from == "node:n1" && r.record.to == "node:n2"),
        "node → node probed"
    );
    let _ = EXTERNAL_IP;
}

/// The node's host network as `ip` and `nft` show it.
fn host_network(cluster: &DemoCluster, node: &str) -> String {
    let n = &cluster.nodes[node];
    let mut s = String::new();
    for argv in [
        &["ip", "-4", "addr", "show", "dev", "sy-gw0"][..],
        // IPv4 only: the kernel adds IPv6 link-local routes when it pleases.
        &["ip", "-4", "-d", "route", "show", "table", "all"],
        &["sysctl", "net.ipv4.ip_forward"],
        &["nft", "list", "ruleset"],
        &["iptables-save", "-t", "nat"],
    ] {
        let out = n.netns.exec_output(argv).expect("command runs");
        s.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    // Counters and lifetimes move on their own; the configuration does not.
    s.lines()
        .filter(|l| !l.contains("valid_lft") && !l.starts_with('#') && !l.starts_with(':'))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn node_setup_is_idempotent_repairs_what_is_missing_and_says_what_is_wrong() {
    skip_unless_root!();
    let cluster = start();
    let before = host_network(&cluster, "n1");
    assert!(
        before.contains("10.244.0.0/16 via 169.254.0.1 dev sy-gw0"),
        "{before}"
    );
    // The Service network too: the node's own processes reach ClusterIPs through br-int.
    assert!(
        before.contains("10.96.0.0/12 via 169.254.0.1 dev sy-gw0"),
        "{before}"
    );
    assert!(before.contains("masquerade"), "{before}");
    // Twice more: nothing to change, nothing changed.
    for _ in 0..2 {
        let out = cluster.node_setup("n1").expect("node setup runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(stdout.trim(), "node setup: nothing to change");
        assert_eq!(host_network(&cluster, "n1"), before);
    }
    // Take the route away: node-1 loses pods on other nodes; node setup puts it back, and
    // says so. (A reply within 3 s, a request every half second: the userspace datapath
    // drops a flow's first packets while it learns underlay neighbours.)
    let n1 = &cluster.nodes["n1"];
    let b_ip = cluster
        .pods
        .values()
        .find(|p| p.key.name == "b")
        .unwrap()
        .ip;
    let reaches = || {
        n1.netns
            .exec_output(&["ping", "-c", "1", "-i", "0.5", "-w", "3", &b_ip.to_string()])
            .unwrap()
            .status
            .success()
    };
    assert!(reaches() || reaches(), "node-1 reaches {b_ip}");
    n1.netns
        .exec(&["ip", "route", "del", "10.244.0.0/16"])
        .expect("route deleted");
    let lost = n1
        .netns
        .exec_output(&["ping", "-c", "1", "-W", "1", &b_ip.to_string()])
        .unwrap();
    assert!(
        !lost.status.success(),
        "without the route node-1 must not reach {b_ip}"
    );
    let out = cluster.node_setup("n1").expect("node setup runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("node setup: route 10.244.0.0/16 via 169.254.0.1 dev sy-gw0"),
        "{stdout}"
    );
    assert_eq!(host_network(&cluster, "n1"), before);
    assert!(
        reaches() || reaches(),
        "node-1 reaches {b_ip} again:\n{}",
        host_network(&cluster, "n1")
    );

    // The iptables fallback masquerades just as well, and takes the nft table's place.
    let bin = workspace_binary("switchyard").display().to_string();
    let cidr = cluster.cluster_cidr().expect("cluster CIDR").to_string();
    let setup_with = |tool: &str| {
        let out = n1
            .netns
            .exec_output(&[
                &bin,
                "node-setup",
                "--pod-cidr",
                "10.244.1.0/24",
                "--cluster-cidr",
                &cidr,
                "--service-cidr",
                switchyard_demo::DEMO_SERVICE_CIDR,
                "--snat",
                tool,
            ])
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let switched = setup_with("iptables");
    assert!(
        switched.contains("MASQUERADE")
            && switched.contains("nftables table ip switchyard removed"),
        "{switched}"
    );
    // The NodePort redirect moves with it.
    assert!(
        switched.contains("SWITCHYARD-PREROUTING") && switched.contains("SWITCHYARD-OUTPUT"),
        "{switched}"
    );
    let a = cluster.pods.values().find(|p| p.key.name == "a").unwrap();
    let n1_ip = cluster.nodes["n1"].model.internal_ip;
    let out = cluster
        .probe_all(1)
        .into_iter()
        .find(|r| r.record.from == "x/a" && r.record.to == "external")
        .expect("x/a probes the outside");
    assert!(out.record.connected, "{}", out.json());
    assert_eq!(out.record.seen_source, Some(n1_ip), "{}", out.json());
    assert_eq!(out.record.from_ip, Some(a.ip));
    assert_eq!(
        setup_with("iptables").trim(),
        "node setup: nothing to change"
    );
    let back = setup_with("nft");
    assert!(back.contains("SWITCHYARD-POSTROUTING removed"), "{back}");
    // Everything as before; iptables-nft keeps its own (now empty) nat table, which is
    // iptables' and not ours to remove.
    let now = host_network(&cluster, "n1");
    assert!(before.lines().all(|l| now.lines().any(|n| n == l)), "{now}");
    assert!(!now.contains("SWITCHYARD-POSTROUTING"), "{now}");

    // Bad input: a clear error, nothing disturbed.
    let bad = n1
        .netns
        .exec_output(&[
            &bin,
            "node-setup",
            "--pod-cidr",
            "10.99.1.0/24",
            "--cluster-cidr",
            "10.244.0.0/16",
        ])
        .unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("the pod CIDR 10.99.1.0/24 is not inside the cluster CIDR 10.244.0.0/16"),
        "{err}"
    );
    assert_eq!(host_network(&cluster, "n1"), now);
    // No gateway port (a namespace of our own without OVS): the error says whose job it is.
    let lonely = switchyard_tests::testbed::Netns::create(&switchyard_tests::unique_name("nm"))
        .expect("netns");
    let out = lonely
        .exec_output(&[
            &bin,
            "node-setup",
            "--pod-cidr",
            "10.244.1.0/24",
            "--cluster-cidr",
            "10.244.0.0/16",
        ])
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the gateway port sy-gw0 does not exist") && err.contains("controller"),
        "{err}"
    );
}

const FIELDS: [&str; 10] = [
    "from",
    "to",
    "port",
    "protocol",
    "try",
    "connected",
    "answered_by",
    "from_ip",
    "seen_source",
    "error",
];

/// One `--json` line against the probe contract (README, `--json`); returns the object.
fn check_line(line: &str) -> serde_json::Map<String, Value> {
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    let o = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {line}"))
        .clone();
    let mut keys: Vec<&str> = o.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut want = FIELDS.to_vec();
    want.sort_unstable();
    assert_eq!(keys, want, "{line}");
    assert!(o["from"].is_string() && o["to"].is_string(), "{line}");
    assert!(o["port"].is_u64() && o["try"].is_u64(), "{line}");
    assert!(
        ["ICMP", "TCP", "UDP", "SCTP"].contains(&o["protocol"].as_str().unwrap_or("")),
        "{line}"
    );
    if o["protocol"] == "ICMP" {
        assert_eq!(o["port"], 0, "{line}");
    }
    let connected = o["connected"].as_bool().unwrap_or_else(|| panic!("{line}"));
    for f in ["answered_by", "from_ip", "seen_source"] {
        assert!(o[f].is_null() || o[f].is_string(), "{line}");
    }
    for f in ["from_ip", "seen_source"] {
        if let Some(ip) = o[f].as_str() {
            ip.parse::<Ipv4Addr>()
                .unwrap_or_else(|_| panic!("{f} is no address: {line}"));
        }
    }
    if connected {
        assert!(o["error"].is_null(), "{line}");
    } else {
        let e = o["error"].as_str().unwrap_or("");
        assert!(
            ["refused", "timeout", "unreachable", "reset", "other"].contains(&e),
            "{line}"
        );
    }
    let from = o["from"].as_str().unwrap();
    assert!(
        from == "external" || from.starts_with("node:") || from.split('/').count() == 2,
        "{line}"
    );
    o
}

#[test]
fn demo_json_lines_follow_the_probe_contract() {
    skip_unless_root!();
    let demo = workspace_binary("switchyard-demo");
    let cni = workspace_binary("switchyard-cni");
    let _ = workspace_binary("switchyard");
    let out = std::process::Command::new(&demo)
        .args(["--json", "--check", "--cni-bin"])
        .arg(&cni)
        .output()
        .expect("the demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "switchyard demo --json --check failed ({}):\n{stderr}",
        out.status
    );
    let lines: Vec<serde_json::Map<String, Value>> = stdout.lines().map(check_line).collect();
    // The bundled cluster: 6 pods on 3 nodes. Every pod and node probes every other pod
    // (ICMP + its ports), every node (ICMP + TCP 10250) and the external client.
    assert!(lines.len() > 100, "{} lines:\n{stdout}", lines.len());
    let count =
        |f: &dyn Fn(&serde_json::Map<String, Value>) -> bool| lines.iter().filter(|o| f(o)).count();
    assert_eq!(count(&|o| o["to"] == "external"), 6 + 3);
    assert_eq!(
        count(&|o| o["to"] == "node:node-1" && o["protocol"] == "TCP"),
        6 + 2
    );
    assert_eq!(
        count(&|o| o["from"] == "node:node-3" && o["to"] == "frontend/web-1"),
        3,
        "ICMP, TCP 80 and UDP 443"
    );
    assert!(count(&|o| o["protocol"] == "UDP") >= 2 * 8, "UDP probed");
    // The bundled Service (frontend/web, TCP 80): every pod and node, --tries (4) times.
    assert_eq!(count(&|o| o["to"] == "service:frontend/web"), (6 + 3) * 4);
    // Its nodePort on each of the 3 nodes: every pod, node and the external client, 4 times.
    let node_port = |o: &serde_json::Map<String, Value>| {
        o["to"]
            .as_str()
            .is_some_and(|t| t.starts_with("nodeport:") && t.ends_with(":frontend/web"))
    };
    assert_eq!(count(&|o| node_port(o)), 3 * (6 + 3 + 1) * 4);
    assert!(count(&|o| node_port(o) && o["port"] == 30080) > 0);
    // Everything connected on the bundled cluster (no policies), with names in the answers:
    // the target's own, or for the Service one of its endpoints (the web pods).
    for o in &lines {
        assert_eq!(o["connected"], true, "{o:?}");
        if o["to"] == "service:frontend/web" || node_port(o) {
            let by = o["answered_by"].as_str().unwrap_or_default();
            assert!(by == "frontend/web-1" || by == "frontend/web-2", "{o:?}");
        } else if o["protocol"] != "ICMP" {
            assert_eq!(o["answered_by"], o["to"], "{o:?}");
        }
    }
}
