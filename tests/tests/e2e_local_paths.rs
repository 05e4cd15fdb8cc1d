//! The Local traffic policies' own paths end to end on real OVS (issue 9, section 2):
//! session affinity under `externalTrafficPolicy: Local` and `internalTrafficPolicy: Local`
//! (judged by the demo's probes: real sockets, every server names its pod), and a node with
//! more local endpoints than one select group holds (judged by `ovs-ofctl dump-groups`,
//! `dump-flows` and `ofproto/trace`).
//!
//! Affinity cluster: nodes n1 and n2; endpoints `x/a1`, `x/a2` (n1) and `x/b` (n2) serve TCP
//! 8080, `x/c` (n1) is a client. Two endpoints on one node make a Local path's choice a
//! real one: without affinity a client's tries land on both.
//! - `x/sticky-np`: NodePort 30090, eTP Local, `sessionAffinity: ClientIP`;
//!   `x/loose-np`: the same on 30091 without affinity (the control);
//! - `x/sticky-itp` (10.96.0.40) / `x/loose-itp` (10.96.0.41): iTP Local, with / without.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard::pipeline::Encap;
use switchyard_demo::probe::{ProbeProtocol, try_once};
use switchyard_demo::{DemoCluster, DemoOptions, ProbeResult};
use switchyard_tests::{skip_unless_root, workspace_binary};

const TRIES: u32 = 12;

fn start(yaml: String) -> DemoCluster {
    DemoCluster::start(DemoOptions {
        cluster_yaml: yaml,
        encap: Encap::Geneve,
        controller_bin: workspace_binary("switchyard"),
        cni_bin: workspace_binary("switchyard-cni"),
    })
    .unwrap_or_else(|e| panic!("demo cluster: {e}"))
}

fn affinity_yaml() -> String {
    let mut docs = Vec::new();
    for i in 1..=2 {
        docs.push(format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: n{i}}}\nspec: {{podCIDR: \"10.244.{i}.0/24\"}}\n"
        ));
    }
    for (pod, node) in [("a1", "n1"), ("a2", "n1"), ("b", "n2")] {
        docs.push(format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, namespace: x, labels: {{app: web}}}}\nspec:\n  nodeName: {node}\n  containers: [{{name: c, image: x, ports: [{{containerPort: 8080}}]}}]\n"
        ));
    }
    docs.push(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: c, namespace: x, labels: {app: client}}\nspec:\n  nodeName: n1\n  containers: [{name: c, image: x}]\n".into(),
    );
    let affinity =
        "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 600}}\n";
    for (name, ip, node_port, sticky) in [
        ("sticky-np", "10.96.0.30", 30090, true),
        ("loose-np", "10.96.0.31", 30091, false),
    ] {
        docs.push(format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: x}}\nspec:\n  type: NodePort\n  clusterIP: {ip}\n  externalTrafficPolicy: Local\n{}  selector: {{app: web}}\n  ports: [{{name: http, port: 80, targetPort: 8080, nodePort: {node_port}}}]\n",
            if sticky { affinity } else { "" }
        ));
    }
    for (name, ip, sticky) in [
        ("sticky-itp", "10.96.0.40", true),
        ("loose-itp", "10.96.0.41", false),
    ] {
        docs.push(format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: x}}\nspec:\n  clusterIP: {ip}\n  internalTrafficPolicy: Local\n{}  selector: {{app: web}}\n  ports: [{{name: http, port: 80, targetPort: 8080}}]\n",
            if sticky { affinity } else { "" }
        ));
    }
    docs.join("---\n")
}

fn show(results: &[&ProbeResult]) -> String {
    results
        .iter()
        .map(|r| format!("{} ({:?})", r.json(), r.problem()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn probes<'a>(results: &'a [ProbeResult], from: &str, to: &str) -> Vec<&'a ProbeResult> {
    let out: Vec<&ProbeResult> = results
        .iter()
        .filter(|r| r.record.from == from && r.record.to == to)
        .collect();
    assert_eq!(out.len(), TRIES as usize, "{from} → {to}: {}", show(&out));
    out
}

/// Who answered the tries (each must be answered by one of `allowed`).
fn answerers(rs: &[&ProbeResult], allowed: &[&str]) -> BTreeSet<String> {
    rs.iter()
        .map(|r| {
            assert!(r.record.connected, "no answer:\n{}", show(&[r]));
            let by = r.record.answered_by.clone().unwrap_or_default();
            assert!(
                allowed.contains(&by.as_str()),
                "answered by {by}, not one of {allowed:?}:\n{}",
                show(&[r])
            );
            by
        })
        .collect()
}

#[test]
fn session_affinity_holds_on_the_local_paths() {
    skip_unless_root!();
    let cluster = start(affinity_yaml());
    let results = cluster.probe_all(TRIES);
    let n1 = ["x/a1", "x/a2"];

    // The controls: without affinity, n1's Local paths balance over both its endpoints.
    let mut loose_np = BTreeSet::new();
    let mut loose_itp = BTreeSet::new();
    for r in probes(&results, "external", "nodeport:n1:x/loose-np") {
        loose_np.extend(answerers(&[r], &n1));
    }
    for from in ["x/c", "node:n1"] {
        loose_itp.extend(answerers(
            &probes(&results, from, "service:x/loose-itp"),
            &n1,
        ));
    }
    assert_eq!(
        loose_np.len(),
        2,
        "eTP Local without affinity: {loose_np:?}"
    );
    assert_eq!(
        loose_itp.len(),
        2,
        "iTP Local without affinity: {loose_itp:?}"
    );
    answerers(
        &probes(&results, "external", "nodeport:n2:x/sticky-np"),
        &["x/b"],
    );
    answerers(
        &probes(&results, "node:n2", "service:x/sticky-itp"),
        &["x/b"],
    );

    // With affinity, one client's tries one after the other (the demo's run concurrently:
    // a connection racing the first one's learn may be balanced anew, as it may be by
    // kube-proxy's `recent` match): every one answered by one pod of n1. eTP Local: the
    // external client to n1's NodePort, the pod seeing the client's own address; iTP
    // Local: a pod and the node itself to the cluster IP.
    let n1_ip = cluster.nodes["n1"].model.internal_ip;
    let ext = cluster.external.as_ref().expect("external client");
    let c = &cluster.pods[&switchyard::source::ObjectKey::new("x", "c")];
    let node1 = &cluster.nodes["n1"];
    let clients = [
        (
            "external",
            ext.netns.path(),
            ext.netns.name().to_owned(),
            n1_ip,
            30090,
        ),
        (
            "x/c",
            c.netns.path(),
            c.netns.name().to_owned(),
            Ipv4Addr::new(10, 96, 0, 40),
            80,
        ),
        (
            "node:n1",
            node1.netns.path(),
            node1.netns.name().to_owned(),
            Ipv4Addr::new(10, 96, 0, 40),
            80,
        ),
    ];
    for (from, netns, name, dst, port) in clients {
        let one = |netns: std::path::PathBuf, name: String| {
            std::thread::spawn(move || {
                try_once(
                    &netns,
                    &name,
                    dst,
                    ProbeProtocol::L4(switchyard::policy::Protocol::Tcp),
                    port,
                )
            })
            .join()
            .expect("probe thread")
        };
        let first = one(netns.clone(), name.clone());
        // The switch has learned the first one's endpoint once its revalidators have gone
        // over the datapath's flows (a convergence wait).
        node1
            .ovs
            .appctl(&["revalidator/wait"])
            .expect("revalidator/wait");
        let mut tries = vec![first];
        for _ in 0..TRIES {
            tries.push(one(netns.clone(), name.clone()));
        }
        let by: BTreeSet<Option<String>> = tries.iter().map(|o| o.answered_by.clone()).collect();
        assert!(
            tries.iter().all(|o| o.connected)
                && by.len() == 1
                && by
                    .iter()
                    .all(|b| b.as_deref().is_some_and(|b| n1.contains(&b))),
            "{from} -> {dst}:{port}: one pod of n1 must answer every try: {tries:#?}\n{}",
            cluster
                .dump_flows("n1", &["table=SessionAffinity"])
                .unwrap_or_default()
        );
        if from == "external" {
            for o in &tries {
                assert_eq!(o.seen_source, o.from_ip, "{o:?}");
            }
        }
    }

    let wrong: Vec<&ProbeResult> = results.iter().filter(|r| r.problem().is_some()).collect();
    assert!(
        wrong.is_empty(),
        "unexpected probe results:\n{}",
        show(&wrong)
    );

    // The switch learned them on the local path (reg6 bit 1), apart from the cluster path.
    let learned = cluster
        .dump_flows("n1", &["table=SessionAffinity"])
        .expect("dump-flows");
    for dst in [
        "nw_dst=169.254.169.253,tp_dst=30090",
        "nw_dst=10.96.0.40,tp_dst=80",
    ] {
        assert!(
            learned
                .lines()
                .any(|l| l.contains("reg6=0x2/0x2") && l.contains(dst)),
            "no local-path affinity learned for {dst}:\n{learned}"
        );
    }
}

/// Local endpoints of n1: addresses in its (large) pod CIDR, no pod behind them.
const LOCAL_ENDPOINTS: u32 = 900;

fn local_ep(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 20 + (i / 250) as u8, (i % 250 + 1) as u8)
}

#[test]
fn more_local_endpoints_than_one_group_holds_are_all_in_the_nodes_local_groups() {
    skip_unless_root!();
    let yaml = [
        "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\nspec: {podCIDR: \"10.244.16.0/20\"}\n",
        "apiVersion: v1\nkind: Node\nmetadata: {name: n2}\nspec: {podCIDR: \"10.244.32.0/24\"}\n",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: c, namespace: x}\nspec:\n  nodeName: n1\n  containers: [{name: c, image: x}]\n",
    ]
    .join("---\n");
    let mut cluster = start(yaml);
    cluster
        .apply_document(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "big", "namespace": "x"},
            "spec": {"clusterIP": "10.96.0.60", "clusterIPs": ["10.96.0.60"],
                "internalTrafficPolicy": "Local",
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}))
        .expect("apply");
    let endpoints: Vec<Value> = (0..LOCAL_ENDPOINTS)
        .map(|i| json!({"addresses": [local_ep(i).to_string()], "nodeName": "n1"}))
        .chain([json!({"addresses": ["10.244.32.200"], "nodeName": "n2"})])
        .collect();
    cluster
        .apply_document(
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "big-a", "namespace": "x",
                "labels": {"kubernetes.io/service-name": "big"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
            "endpoints": endpoints}),
        )
        .expect("apply");

    let ovs = &cluster.nodes["n1"].ovs;
    let deadline = Instant::now() + Duration::from_secs(60);
    let (groups, local): (String, Vec<String>) = loop {
        let groups = ovs
            .ofctl("dump-groups", "br-int", &[])
            .expect("dump-groups");
        // The local groups: top byte 0x80.. of the group id (the cluster group has 0).
        let local: Vec<String> = groups
            .lines()
            .filter(|l| l.contains("type=select"))
            .filter(|l| {
                l.split(',')
                    .find_map(|f| f.trim().strip_prefix("group_id="))
                    .and_then(|id| id.parse::<u32>().ok())
                    .is_some_and(|id| id >> 24 >= 0x80 && id >> 24 < 0xFE)
            })
            .map(str::to_owned)
            .collect();
        let buckets: usize = local.iter().map(|g| g.matches("bucket=").count()).sum();
        if local.len() == 2 && buckets == LOCAL_ENDPOINTS as usize {
            break (groups, local);
        }
        assert!(
            Instant::now() < deadline,
            "n1: wanted 2 local groups with {LOCAL_ENDPOINTS} buckets, got {} with {buckets}:\n{}",
            local.len(),
            cluster.controller_log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    // Every local endpoint is in exactly one local group; n2's endpoint in none of them.
    let all = local.join("\n");
    for i in 0..LOCAL_ENDPOINTS {
        let dnat = format!("nat(dst={}:", local_ep(i));
        assert_eq!(
            all.matches(&dnat).count(),
            1,
            "{} in the local groups",
            local_ep(i)
        );
    }
    let remote = format!("nat(dst={}:", Ipv4Addr::new(10, 244, 32, 200));
    assert!(!all.contains(&remote), "n2's endpoint is not local to n1");
    // ServiceLb picks a local group by multipath; each has its dispatch flow.
    let flows = cluster.dump_flows("n1", &[]).expect("dump-flows");
    assert!(
        flows.lines().any(|l| l.contains("nw_dst=10.96.0.60")
            && l.contains("multipath(symmetric_l3l4+udp")
            && l.contains("set_field:0x2->reg6")),
        "{flows}"
    );
    let ids: Vec<&str> = local
        .iter()
        .map(|g| {
            g.split(',')
                .find_map(|f| f.trim().strip_prefix("group_id="))
                .expect("group id")
        })
        .collect();
    for id in &ids {
        assert!(
            flows.lines().any(|l| l.contains("reg6=0x2/0x2")
                && l.contains("reg7=")
                && l.ends_with(&format!("actions=group:{id}"))),
            "no flow dispatches to local group {id}:\n{flows}\n{groups}"
        );
    }
    // What the switch does with a new connection from the pod: a local group, a local
    // endpoint's DNAT.
    let c = &cluster.pods[&switchyard::source::ObjectKey::new("x", "c")];
    let in_port = {
        let classifier = cluster
            .dump_flows("n1", &["table=Classifier"])
            .expect("dump-flows");
        let cookie = format!("cookie={:#x}", switchyard::ids::pod_cookie(c.ip));
        let line = classifier
            .lines()
            .find(|l| l.contains(&cookie))
            .unwrap_or_else(|| panic!("no classifier flow for x/c:\n{classifier}"))
            .to_owned();
        line.split("in_port=")
            .nth(1)
            .and_then(|r| r.split([' ', ',']).next())
            .expect("in_port")
            .to_owned()
    };
    let mac = |ip: Ipv4Addr| {
        let o = ip.octets();
        format!("0a:58:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
    };
    let gateway = cluster.nodes["n1"].model.gateway_ip();
    let mut reached = BTreeSet::new();
    for sport in [40000u16, 40001, 40002, 40003, 40004, 40005, 40006, 40007] {
        let packet = format!(
            "tcp,in_port={in_port},dl_src={},dl_dst={},nw_src={},nw_dst=10.96.0.60,tp_src={sport},tp_dst=80",
            mac(c.ip),
            mac(gateway),
            c.ip
        );
        let trace = ovs
            .appctl(&["ofproto/trace", "br-int", &packet, "--ct-next", "trk,new"])
            .expect("ofproto/trace");
        let group = ids
            .iter()
            .find(|id| trace.contains(&format!("group:{id}")))
            .unwrap_or_else(|| panic!("the trace reaches no local group:\n{trace}"));
        reached.insert(group.to_string());
        let dnat = trace
            .split("nat(dst=")
            .nth(1)
            .and_then(|r| r.split(':').next())
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
            .unwrap_or_else(|| panic!("no DNAT in the trace:\n{trace}"));
        assert!(
            (0..LOCAL_ENDPOINTS).any(|i| local_ep(i) == dnat),
            "DNAT to {dnat}, not a local endpoint:\n{trace}"
        );
    }
    eprintln!("local groups reached by 8 traced source ports: {reached:?}");
}
