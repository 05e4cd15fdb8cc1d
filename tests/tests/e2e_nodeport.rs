//! NodePort, externalIPs, LoadBalancer IPs and the traffic policies end to end (issue 9,
//! section 2) on real OVS, judged by the demo's probes (real sockets; every server reports
//! its pod's name and the source it saw) against the probe contract (README, `--json`).
//!
//! Cluster: nodes n1, n2, n3 (n3 holds no pod: a node without a local endpoint); endpoints
//! `x/a` (n1) and `x/b` (n2) serve TCP 8080; `x/c` (n1) is a client that serves TCP 80.
//! - `x/np`: NodePort 30080 → 8080, `externalTrafficPolicy: Cluster`, externalIP
//!   203.0.113.7 (the external client's route goes via the first node, n1);
//! - `x/local`: LoadBalancer, nodePort 30081, `externalTrafficPolicy: Local`, ingress IP
//!   203.0.113.9 (routed via n2: `--external-route`);
//! - `x/itp`: ClusterIP 10.96.0.30, `internalTrafficPolicy: Local`.
//!
//! Then a NetworkPolicy on the endpoints: external clients of a NodePort are judged by it
//! (their source is kept up to the endpoint), the node's own traffic is not.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use switchyard::pipeline::Encap;
use switchyard_demo::{DemoCluster, DemoOptions, EXTERNAL_IP, ProbeResult};
use switchyard_tests::{skip_unless_root, workspace_binary};

fn cluster_yaml() -> String {
    let mut docs = Vec::new();
    for i in 1..=3 {
        docs.push(format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: n{i}}}\nspec: {{podCIDR: \"10.244.{i}.0/24\"}}\n"
        ));
    }
    for (pod, node) in [("a", "n1"), ("b", "n2")] {
        docs.push(format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, namespace: x, labels: {{app: web}}}}\nspec:\n  nodeName: {node}\n  containers: [{{name: c, image: x, ports: [{{containerPort: 8080}}]}}]\n"
        ));
    }
    docs.push(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: c, namespace: x, labels: {app: client}}\nspec:\n  nodeName: n1\n  containers: [{name: c, image: x}]\n".into(),
    );
    docs.push(
        "apiVersion: v1\nkind: Service\nmetadata: {name: np, namespace: x}\nspec:\n  type: NodePort\n  clusterIP: 10.96.0.10\n  selector: {app: web}\n  externalIPs: [203.0.113.7]\n  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30080}]\n".into(),
    );
    docs.push(
        "apiVersion: v1\nkind: Service\nmetadata: {name: local, namespace: x}\nspec:\n  type: LoadBalancer\n  clusterIP: 10.96.0.20\n  externalTrafficPolicy: Local\n  selector: {app: web}\n  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30081}]\nstatus:\n  loadBalancer:\n    ingress: [{ip: 203.0.113.9}]\n".into(),
    );
    docs.push(
        "apiVersion: v1\nkind: Service\nmetadata: {name: itp, namespace: x}\nspec:\n  clusterIP: 10.96.0.30\n  internalTrafficPolicy: Local\n  selector: {app: web}\n  ports: [{name: http, port: 80, targetPort: 8080}]\n".into(),
    );
    docs.join("---\n")
}

fn show(results: &[&ProbeResult]) -> String {
    results
        .iter()
        .map(|r| format!("{} ({:?})", r.json(), r.problem()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The probes of one client to one target (every try).
fn probes<'a>(results: &'a [ProbeResult], from: &str, to: &str) -> Vec<&'a ProbeResult> {
    let out: Vec<&ProbeResult> = results
        .iter()
        .filter(|r| r.record.from == from && r.record.to == to)
        .collect();
    assert!(!out.is_empty(), "{from} → {to} was not probed");
    out
}

fn answered_by(rs: &[&ProbeResult], allowed: &[&str]) {
    for r in rs {
        assert!(r.record.connected, "no answer:\n{}", show(&[r]));
        let by = r.record.answered_by.as_deref().unwrap_or_default();
        assert!(
            allowed.contains(&by),
            "answered by {by}, not one of {allowed:?}:\n{}",
            show(&[r])
        );
    }
}

fn not_answered(rs: &[&ProbeResult]) {
    for r in rs {
        assert!(
            !r.record.connected,
            "answered, but must not be:\n{}",
            show(&[r])
        );
    }
}

#[test]
fn node_ports_external_ips_lb_ips_and_traffic_policies() {
    skip_unless_root!();
    let mut cluster = DemoCluster::start(DemoOptions {
        cluster_yaml: cluster_yaml(),
        encap: Encap::Geneve,
        controller_bin: workspace_binary("switchyard"),
        cni_bin: workspace_binary("switchyard-cni"),
    })
    .unwrap_or_else(|e| panic!("demo cluster: {e}"));
    cluster
        .add_external_route("203.0.113.9/32".parse().unwrap(), "n2")
        .expect("external route");
    // Every node holds every Service's flows and endpoints, as the demo reads them in
    // `ovs-ofctl dump-flows` and `dump-groups` (a format it no longer recognises would make
    // every probe wait for nothing).
    cluster
        .wait_for_services()
        .unwrap_or_else(|missing| panic!("Services not realised: {missing}"));
    let results = cluster.probe_all(3);
    let gateway: BTreeMap<String, Ipv4Addr> = cluster
        .nodes
        .values()
        .map(|n| (n.model.name.to_string(), n.model.gateway_ip()))
        .collect();

    // eTP Cluster: every node's NodePort answers everyone, from pods (on the node and
    // elsewhere), nodes (their own address: locally generated traffic; another node's) and
    // the outside; n3 holds no endpoint and still answers, SNATing so that the endpoint
    // (on another node) replies through it: the endpoint sees n3's gateway address.
    for node in ["n1", "n2", "n3"] {
        let to = format!("nodeport:{node}:x/np");
        for from in ["x/c", "node:n1", "node:n3", "external"] {
            answered_by(&probes(&results, from, &to), &["x/a", "x/b"]);
        }
    }
    for r in probes(&results, "external", "nodeport:n3:x/np") {
        assert_eq!(r.record.seen_source, Some(gateway["n3"]), "{}", show(&[r]));
    }
    let both: std::collections::BTreeSet<&str> = results
        .iter()
        .filter(|r| r.record.to.ends_with(":x/np") && r.record.to.starts_with("nodeport:"))
        .filter_map(|r| r.record.answered_by.as_deref())
        .collect();
    assert_eq!(both.len(), 2, "balanced over both endpoints: {both:?}");

    // externalIP (routed via n1) from outside, pods and nodes.
    for from in ["external", "x/c", "node:n2"] {
        answered_by(
            &probes(&results, from, "externalip:203.0.113.7:x/np"),
            &["x/a", "x/b"],
        );
    }

    // eTP Local: from outside, a node answers only with its own endpoint, and the endpoint
    // sees the client's own address; a node without a local endpoint does not answer.
    for (node, pod) in [("n1", "x/a"), ("n2", "x/b")] {
        let rs = probes(&results, "external", &format!("nodeport:{node}:x/local"));
        answered_by(&rs, &[pod]);
        for r in rs {
            assert_eq!(r.record.seen_source, r.record.from_ip, "{}", show(&[r]));
        }
    }
    not_answered(&probes(&results, "external", "nodeport:n3:x/local"));
    // Another node's traffic to n3's NodePort is external there too; n3's own is not.
    not_answered(&probes(&results, "node:n1", "nodeport:n3:x/local"));
    answered_by(
        &probes(&results, "node:n3", "nodeport:n3:x/local"),
        &["x/a", "x/b"],
    );
    // The LB IP, routed via n2 (--external-route): n2's endpoint, the client's address.
    let rs = probes(&results, "external", "lbip:203.0.113.9:x/local");
    answered_by(&rs, &["x/b"]);
    for r in rs {
        assert_eq!(r.record.seen_source, r.record.from_ip, "{}", show(&[r]));
        assert_eq!(r.record.from_ip, Some(EXTERNAL_IP), "its route's source");
    }
    // From pods the LB IP is balanced cluster-wide on their node.
    answered_by(
        &probes(&results, "x/c", "lbip:203.0.113.9:x/local"),
        &["x/a", "x/b"],
    );

    // iTP Local: in-cluster clients of the ClusterIP get their own node's endpoint only; a
    // node without one gets no answer.
    answered_by(&probes(&results, "x/c", "service:x/itp"), &["x/a"]);
    answered_by(&probes(&results, "node:n1", "service:x/itp"), &["x/a"]);
    answered_by(&probes(&results, "node:n2", "service:x/itp"), &["x/b"]);
    not_answered(&probes(&results, "node:n3", "service:x/itp"));

    // And every Service probe is what the demo expects of it.
    let wrong: Vec<&ProbeResult> = results.iter().filter(|r| r.problem().is_some()).collect();
    assert!(
        wrong.is_empty(),
        "unexpected probe results:\n{}",
        show(&wrong)
    );

    // A nodePort no Service has is refused (as the node's stack refuses a closed port).
    let ext = cluster.external.as_ref().expect("external client");
    let n1 = cluster.nodes["n1"].model.internal_ip;
    let out = ext
        .netns
        .exec_output(&[
            "timeout",
            "5",
            "bash",
            "-c",
            &format!("exec 3<>/dev/tcp/{n1}/30999"),
        ])
        .expect("bash");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("refused"),
        "an unknown nodePort must be refused: {err}"
    );

    // Node setup holds the NodePort redirect and the external routes; run again, it
    // changes nothing.
    let again = cluster.node_setup("n2").expect("node setup");
    assert!(again.status.success());
    assert_eq!(
        String::from_utf8_lossy(&again.stdout).trim(),
        "node setup: nothing to change",
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let nft = cluster.nodes["n2"]
        .netns
        .exec(&["nft", "list", "table", "ip", "switchyard"])
        .expect("nft");
    assert!(
        nft.contains("th dport 30000-32767 dnat to 169.254.169.253"),
        "{nft}"
    );
    let routes = cluster.nodes["n2"]
        .netns
        .exec(&["ip", "route", "show", "dev", "sy-gw0"])
        .expect("ip route");
    assert!(
        routes.contains("169.254.169.253 via 169.254.0.1") && routes.contains("203.0.113.9 via"),
        "{routes}"
    );

    // NetworkPolicy applies to external clients too, after DNAT (the pod's port): the web
    // pods admit TCP/8080 from the pod network only. The external client of n1's eTP Local
    // NodePort (x/a, on n1, sees the client's own address) is denied; the node itself
    // (kubelet probes: the pod's address directly; its own NodePort) is not judged.
    let policy = |from: Vec<&str>| {
        let from: Vec<_> = from
            .into_iter()
            .map(|cidr| serde_json::json!({"ipBlock": {"cidr": cidr}}))
            .collect();
        serde_json::json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "web", "namespace": "x"},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"],
                "ingress": [{"from": from, "ports": [{"protocol": "TCP", "port": 8080}]}]}})
    };
    let a_ip = cluster.pods[&switchyard::source::ObjectKey::new("x", "a")].ip;
    let n1_netns = cluster.nodes["n1"].netns.name().to_owned();
    let external_netns = ext.netns.name().to_owned();
    let checks = [
        (
            "external → n1:30081 (eTP Local, x/a)",
            &external_netns,
            n1,
            30081,
        ),
        ("node n1 → x/a:8080", &n1_netns, a_ip, 8080),
        ("node n1 → n1:30081", &n1_netns, n1, 30081),
    ];
    cluster
        .apply_document(policy(vec!["10.244.0.0/16"]))
        .expect("apply policy");
    for (what, netns, ip, port) in checks {
        let external = what.starts_with("external");
        let reached = switchyard_testbed::wait_until(Duration::from_secs(30), || {
            connects(netns, ip, port) != external
        });
        assert!(
            reached,
            "{what}: {} under a policy admitting the pod network only",
            if external {
                "still answered"
            } else {
                "not answered"
            }
        );
    }
    // Admitting the external client's address (as the endpoint saw it before) lets it in
    // again.
    let client = probes(&results, "external", "nodeport:n1:x/local")[0]
        .record
        .seen_source
        .expect("the client's address, as x/a saw it");
    cluster
        .apply_document(policy(vec!["10.244.0.0/16", &format!("{client}/32")]))
        .expect("apply policy");
    let (what, netns, ip, port) = checks[0];
    assert!(
        switchyard_testbed::wait_until(Duration::from_secs(30), || connects(netns, ip, port)),
        "{what}: not answered once the policy admits {client}"
    );
}

/// True when a TCP connection from the network namespace `netns` to `ip:port` is accepted
/// within 2 s (a policy's drop leaves it unanswered).
fn connects(netns: &str, ip: Ipv4Addr, port: u16) -> bool {
    std::process::Command::new("ip")
        .args(["netns", "exec", netns, "timeout", "2", "bash", "-c"])
        .arg(format!("exec 3<>/dev/tcp/{ip}/{port}"))
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
