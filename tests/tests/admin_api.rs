//! The admin API, yardctl over it, and the metrics endpoint, on a real demo cluster (real
//! OVS in network namespaces, pods attached by the real CNI plugin). Every answer is checked
//! against the truth the switches and the demo hold: `ovs-ofctl dump-flows` counts and
//! lines, `ovs-vsctl` ofports, the addresses CNI returned. Listener rules (no plaintext TCP
//! beyond loopback; mutual TLS) are checked on the real controller binary.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use switchyard::admin::proto;
use switchyard::admin::{TlsFiles, client};
use switchyard::pipeline::Encap;
use switchyard::source::ObjectKey;
use switchyard_demo::{DemoCluster, DemoOptions};
use switchyard_tests::{require_root, wait_for, workspace_binary};

const NODE1: &str = "ad-n1";
const NODE2: &str = "ad-n2";

fn cluster_yaml(nodes: &[(&str, &str)], pods: &[(&str, &str, &str)]) -> String {
    let mut docs = Vec::new();
    for (name, cidr) in nodes {
        docs.push(format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\nspec: {{podCIDR: \"{cidr}\"}}\n"
        ));
    }
    for (ns, name, node) in pods {
        docs.push(format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{app: {name}}}}}\nspec:\n  nodeName: {node}\n  containers: [{{name: c, image: x}}]\n"
        ));
    }
    docs.join("---\n")
}

fn key(ns: &str, name: &str) -> ObjectKey {
    ObjectKey::new(ns, name)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// `ovs-ofctl -O OpenFlow13 dump-flows --names --no-stats` of a node, flow lines only.
fn ofctl_flows(cluster: &DemoCluster, node: &str, filter: &[&str]) -> Vec<String> {
    let mut args = vec!["--no-stats"];
    args.extend_from_slice(filter);
    cluster
        .dump_flows(node, &args)
        .expect("ovs-ofctl dump-flows")
        .lines()
        .filter(|l| l.contains("actions="))
        .map(|l| l.trim().to_owned())
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// yardctl with `args`; its exit code and stdout.
fn yardctl(server: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(workspace_binary("yardctl"))
        .args(args)
        .env("SWITCHYARD_ADMIN", server)
        .output()
        .expect("run yardctl");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            if out.status.success() {
                String::new()
            } else {
                format!("\n[stderr] {}", String::from_utf8_lossy(&out.stderr))
            }
        ),
    )
}

fn yardctl_json(server: &str, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    let (code, out) = yardctl(server, &all);
    assert_eq!(code, 0, "yardctl {args:?}: {out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("yardctl {args:?} --json: {e}: {out}"))
}

/// GET `path` from the metrics endpoint: (status code, body).
fn http_get(metrics_url: &str, path: &str) -> (u16, String) {
    let addr = metrics_url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .expect("host:port");
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the metrics endpoint");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read the answer");
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (code, body)
}

/// The value of one sample (`name{labels}` exactly as the text format prints it).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

fn scrape(cluster: &DemoCluster) -> String {
    let (code, body) = http_get(&cluster.metrics_url(), "/metrics");
    assert_eq!(code, 200, "{body}");
    body
}

fn pod_by<'a>(pods: &'a [proto::Pod], ns: &str, name: &str) -> &'a proto::Pod {
    pods.iter()
        .find(|p| p.namespace == ns && p.name == name)
        .unwrap_or_else(|| panic!("no pod {ns}/{name} in {pods:?}"))
}

#[test]
fn every_rpc_answers_what_the_switches_hold_and_metrics_follow_pods() {
    switchyard_tests::skip_unless_root!();
    require_root();
    let yaml = cluster_yaml(
        &[(NODE1, "10.252.1.0/24"), (NODE2, "10.252.2.0/24")],
        &[("x", "a", NODE1), ("x", "b", NODE1), ("yz", "c", NODE2)],
    );
    // Two ClusterIP Services for the trace: x/web (endpoint x/b, port 80 → 8080) and x/empty
    // (no endpoint). The demo builds their EndpointSlices from the selectors.
    let service = |name: &str, ip: &str, app: &str| {
        format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: x}}\nspec:\n  clusterIP: {ip}\n  clusterIPs: [{ip}]\n  selector: {{app: {app}}}\n  ports: [{{name: http, port: 80, targetPort: 8080, protocol: TCP}}]\n"
        )
    };
    let yaml = format!(
        "{yaml}{}{}",
        service("web", "10.96.7.10", "b"),
        service("empty", "10.96.7.11", "nobody")
    );
    let mut cluster = DemoCluster::start(DemoOptions {
        cluster_yaml: yaml,
        encap: Encap::Geneve,
        controller_bin: workspace_binary("switchyard"),
        cni_bin: workspace_binary("switchyard-cni"),
    })
    .unwrap_or_else(|e| panic!("demo cluster: {e}"));
    let server = cluster.admin_address();
    let rt = runtime();
    let mut api = rt
        .block_on(client::connect(&server, None))
        .expect("connect to the admin API");

    // Status: every node ready, its flow counts those of ovs-ofctl.
    let converged = |api: &mut proto::admin_client::AdminClient<_>| {
        let s = rt
            .block_on(api.status(proto::StatusRequest {}))
            .expect("Status")
            .into_inner();
        s.nodes.iter().all(|n| {
            n.ready
                && n.flows_desired == n.flows_installed
                && n.flows_installed as usize == ofctl_flows(&cluster, &n.name, &[]).len()
        })
    };
    assert!(
        wait_for(Duration::from_secs(30), || converged(&mut api)).is_some(),
        "nodes never converged:\n{}",
        cluster.controller_log_tail(40)
    );
    let status = rt
        .block_on(api.status(proto::StatusRequest {}))
        .unwrap()
        .into_inner();
    assert_eq!(status.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(status.role, "leader");
    assert!(status.source_synced);
    assert_eq!(status.source, "cluster-file");
    let names: Vec<&str> = status.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, [NODE1, NODE2]);
    for n in &status.nodes {
        assert!(n.ovsdb_connected_since_ms > 0, "{n:?}");
        assert!(n.openflow_connected_since_ms > 0, "{n:?}");
        assert!(
            n.last_realisation_ms > 0 && n.last_realisation_changes > 0,
            "{n:?}"
        );
        assert_eq!(n.last_error, "", "{n:?}");
    }
    assert_eq!(status.nodes[0].pods, 2);
    assert_eq!(status.nodes[0].pod_cidr, "10.252.1.0/24");

    // ListPods: the addresses CNI returned, the ofports vswitchd reports, the flows on br-int.
    let pods = rt
        .block_on(api.list_pods(proto::ListPodsRequest {
            flow_counts: true,
            ..Default::default()
        }))
        .expect("ListPods")
        .into_inner()
        .pods;
    assert_eq!(
        pods.len(),
        3,
        "{pods:?}\ndemo pods: {:?}\n{}",
        cluster.pods.keys().collect::<Vec<_>>(),
        cluster.controller_log_tail(60)
    );
    for (k, demo_pod) in &cluster.pods {
        let p = pod_by(&pods, &k.namespace, &k.name);
        assert_eq!(p.ip, demo_pod.ip.to_string());
        assert_eq!(p.node, demo_pod.node);
        assert_eq!(p.container_id, demo_pod.container_id);
        let ofport = cluster.nodes[&p.node]
            .ovs
            .vsctl(&["get", "Interface", &p.interface, "ofport"])
            .expect("ovs-vsctl get ofport");
        assert_eq!(p.ofport.to_string(), ofport.trim(), "{p:?}");
        let cookie = format!("cookie={:#x}/-1", switchyard::ids::pod_cookie(demo_pod.ip));
        let owned = ofctl_flows(&cluster, &p.node, &[&cookie]).len();
        assert!(owned > 0);
        assert_eq!(p.flows_installed, owned as i64, "{p:?}");
        assert!(p.installed_since_ms > 0);
        assert!(p.labels.contains(&format!("app={}", k.name)), "{p:?}");
    }
    let only_y = rt
        .block_on(api.list_pods(proto::ListPodsRequest {
            namespace: "yz".into(),
            ..Default::default()
        }))
        .unwrap()
        .into_inner()
        .pods;
    assert_eq!(only_y.len(), 1);
    assert_eq!(only_y[0].flows_installed, -1, "not counted unless asked");

    // GetPod, and the error for a pod nobody has.
    let a = rt
        .block_on(api.get_pod(proto::GetPodRequest {
            namespace: "x".into(),
            name: "a".into(),
        }))
        .expect("GetPod")
        .into_inner();
    assert_eq!(a.ip, cluster.pods[&key("x", "a")].ip.to_string());
    assert_eq!(a.flows_installed, pod_by(&pods, "x", "a").flows_installed);
    let missing = rt
        .block_on(api.get_pod(proto::GetPodRequest {
            namespace: "x".into(),
            name: "nobody".into(),
        }))
        .expect_err("an unknown pod");
    assert_eq!(missing.code(), tonic::Code::NotFound, "{missing:?}");

    // DumpFlows: ovs-ofctl's lines exactly, each with its owner; the filters.
    let dump = |api: &mut proto::admin_client::AdminClient<_>, table: &str, owner: &str| {
        rt.block_on(api.dump_flows(proto::DumpFlowsRequest {
            node: NODE1.into(),
            table: table.into(),
            owner: owner.into(),
        }))
        .expect("DumpFlows")
        .into_inner()
        .flows
    };
    // The cluster file's EndpointSlices name the pods' addresses once they are attached, so
    // the Services may still be realising: compare until both agree (or the deadline).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let all = loop {
        let all = dump(&mut api, "", "");
        let ours = sorted(all.iter().map(|f| f.text.clone()).collect());
        let theirs = sorted(ofctl_flows(&cluster, NODE1, &[]));
        if ours == theirs {
            break all;
        }
        if std::time::Instant::now() > deadline {
            assert_eq!(
                ours, theirs,
                "DumpFlows and ovs-ofctl dump-flows --names --no-stats disagree"
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let a_ip = cluster.pods[&key("x", "a")].ip;
    for f in &all {
        if f.cookie == switchyard::ids::pod_cookie(a_ip) {
            assert_eq!(f.owner, "pod x/a", "{f:?}");
        }
        assert!(!f.owner.starts_with("foreign"), "{f:?}");
    }
    assert!(
        all.iter().any(|f| f.owner == "node ad-n2"),
        "remote node flows named"
    );
    assert!(all.iter().any(|f| f.owner == "pipeline"));
    let spoof = dump(&mut api, "SpoofGuard", "");
    assert!(!spoof.is_empty());
    assert!(
        spoof
            .iter()
            .all(|f| f.table == "SpoofGuard" && f.table_id == 10)
    );
    assert_eq!(
        spoof.len(),
        ofctl_flows(&cluster, NODE1, &["table=SpoofGuard"]).len()
    );
    let of_a = dump(&mut api, "", "pod x/a");
    assert_eq!(of_a.len() as i64, a.flows_installed);
    let bad_table = rt
        .block_on(api.dump_flows(proto::DumpFlowsRequest {
            node: NODE1.into(),
            table: "NoSuchTable".into(),
            owner: String::new(),
        }))
        .expect_err("an unknown table");
    assert_eq!(bad_table.code(), tonic::Code::InvalidArgument);
    assert!(bad_table.message().contains("SpoofGuard"), "{bad_table:?}");

    // DiffFlows: empty when converged.
    let diff = |api: &mut proto::admin_client::AdminClient<_>| {
        rt.block_on(api.diff_flows(proto::DiffFlowsRequest { node: NODE1.into() }))
            .expect("DiffFlows")
            .into_inner()
    };
    let d = diff(&mut api);
    assert!(
        d.missing.is_empty() && d.unexpected.is_empty() && d.changed.is_empty(),
        "{d:?}"
    );

    // yardctl over the same API (SWITCHYARD_ADMIN is the server; --json for scripts).
    let st = yardctl_json(&server, &["status"]);
    assert_eq!(st["nodes"].as_array().map(Vec::len), Some(2), "{st}");
    let (code, text) = yardctl(&server, &["pods"]);
    assert_eq!(code, 0, "{text}");
    let header = text.lines().next().unwrap_or_default();
    assert!(header.starts_with("NAMESPACE  NAME  NODE"), "{text}");
    // Aligned: every row's IP starts in the header's IP column.
    let ip_col = header.find(" IP ").expect("IP column") + 1;
    for line in text.lines().skip(1) {
        assert!(
            line[ip_col..].starts_with("10.252."),
            "misaligned row {line:?} in\n{text}"
        );
    }
    let pj = yardctl_json(&server, &["pod", "x/a"]);
    assert_eq!(pj["ip"], a_ip.to_string());
    let fj = yardctl_json(&server, &["flows", NODE1, "--owner", "pod x/a"]);
    assert_eq!(
        fj["flows"].as_array().map(Vec::len),
        Some(of_a.len()),
        "{fj}"
    );
    let (code, text) = yardctl(&server, &["flows", NODE1, "--table", "SpoofGuard"]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(text.lines().count(), spoof.len() + 1, "{text}");
    assert_eq!(yardctl(&server, &["diff", NODE1]).0, 0);
    assert_eq!(yardctl(&server, &["pod", "x/nobody"]).0, 4);
    assert_eq!(yardctl(&server, &["flows", "no-such-node"]).0, 4);
    assert_eq!(yardctl(&server, &["pod", "no-slash"]).0, 2);
    // Trace over the API: x/a → x/b (same node) ends on x/b's port, as the switch says;
    // x/a → yz/c crosses the tunnel to node 2; a spoofed source is dropped (exit 1).
    let b = pod_by(&pods, "x", "b");
    let tj = yardctl_json(&server, &["trace", NODE1, "from=x/a to=x/b port=80/TCP"]);
    assert_eq!(tj["verdict"]["kind"], "output", "{tj}");
    assert_eq!(tj["verdict"]["port"], b.ofport, "{tj}");
    assert!(tj["steps"].as_array().is_some_and(|s| s.len() >= 5), "{tj}");
    let packet = tj["packet"].as_str().expect("the resolved packet");
    let switch = cluster.nodes[NODE1]
        .ovs
        .appctl(&["ofproto/trace", "br-int", packet])
        .expect("ofproto/trace");
    // (tests/tests/trace_agrees.rs compares paths and verdicts; here: the resolved packet
    // is one the switch takes, and it delivers it too.)
    assert!(
        switch.contains("Datapath actions:") && !switch.contains("Datapath actions: drop"),
        "the switch disagrees with the trace of {packet}:\n{switch}"
    );
    let tj = yardctl_json(&server, &["trace", NODE1, "from=x/a to=yz/c port=80/TCP"]);
    assert_eq!(tj["verdict"]["kind"], "tunnel", "{tj}");
    assert_eq!(tj["verdict"]["node"], NODE2, "{tj}");
    let spoofed = format!(
        "in_port={},tcp,nw_src=10.99.0.1,nw_dst={},tp_dst=80",
        pod_by(&pods, "x", "a").ofport,
        b.ip
    );
    let (code, text) = yardctl(&server, &["trace", NODE1, &spoofed]);
    assert_eq!(code, 1, "a dropped packet exits 1:\n{text}");
    assert!(text.contains("verdict: dropped"), "{text}");
    let (code, text) = yardctl(&server, &["trace", NODE1, "from=x/nobody to=x/b"]);
    assert_eq!(code, 4, "{text}");
    // A Service, in Kubernetes terms: the endpoint chosen, DNAT, delivery (exit 0); one
    // without endpoints is refused (exit 1). Service flows are realised asynchronously.
    let web = "from=x/a to=service:x/web port=80/TCP";
    let realised = wait_for(Duration::from_secs(60), || {
        yardctl(&server, &["trace", NODE1, web]).0 == 0
    });
    assert!(realised.is_some(), "x/web's flows never reached node 1");
    let (code, text) = yardctl(&server, &["trace", NODE1, web]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(&format!(
            "service: Service x/web port 80/TCP (10.96.7.10:80) → endpoint x/b {}:8080",
            b.ip
        )),
        "{text}"
    );
    assert!(text.contains("DNATed to"), "{text}");
    let (code, text) = yardctl(&server, &["trace", NODE1, "from=x/a to=service:x/empty"]);
    assert_eq!(code, 1, "a refused connection exits 1:\n{text}");
    assert!(
        text.contains("verdict: refused: Service x/empty port 80/TCP has no usable endpoint"),
        "{text}"
    );
    let (code, out) = yardctl(
        &server,
        &["trace", NODE1, "from=x/a to=service:x/empty", "--json"],
    );
    assert_eq!(code, 1, "{out}");
    // (yardctl() appends stderr to a failing command's output.)
    let json = out.split("\n[stderr]").next().unwrap_or_default();
    let tj: serde_json::Value = serde_json::from_str(json).expect("trace --json");
    assert_eq!(tj["verdict"]["kind"], "refused", "{tj}");
    assert_eq!(
        tj["service"], "Service x/empty port 80/TCP (10.96.7.11:80): no usable endpoint",
        "{tj}"
    );
    let (code, text) = yardctl("unix:/nonexistent/admin.sock", &["status"]);
    assert_eq!(code, 3, "{text}");
    let (code, completion) = yardctl(&server, &["completions", "bash"]);
    assert_eq!(code, 0);
    assert!(completion.contains("yardctl") && completion.contains("diff"));

    // Metrics and health.
    assert_eq!(http_get(&cluster.metrics_url(), "/healthz").0, 200);
    let (code, body) = http_get(&cluster.metrics_url(), "/readyz");
    assert_eq!(code, 200, "{body}");
    let m0 = scrape(&cluster);
    let pods_gauge = "switchyard_objects{kind=\"pod\"}";
    let adds = "switchyard_cni_seconds_count{command=\"add\",result=\"ok\"}";
    let dels = "switchyard_cni_seconds_count{command=\"del\",result=\"ok\"}";
    let installed1 = format!("switchyard_flows{{node=\"{NODE1}\",state=\"installed\"}}");
    let pod_latency = "switchyard_realisation_seconds_count{feature=\"pod\"}";
    assert_eq!(sample(&m0, pods_gauge), Some(3.0), "{m0}");
    assert_eq!(sample(&m0, adds), Some(3.0), "{m0}");
    assert_eq!(sample(&m0, "switchyard_switches_connected"), Some(2.0));
    assert_eq!(sample(&m0, "switchyard_source_synced"), Some(1.0));
    let flows0 = sample(&m0, &installed1).expect("flows of node 1");
    assert_eq!(flows0 as usize, ofctl_flows(&cluster, NODE1, &[]).len());
    let latency0 = sample(&m0, pod_latency).unwrap_or(0.0);

    // A flow added by hand is removed as it happens: counted as drift, named in the events.
    let mgmt = cluster.nodes[NODE1].ovs.mgmt_target("br-int");
    let foreign = "table=SpoofGuard,priority=65000,ip,nw_src=10.99.0.1,actions=drop";
    let out = Command::new("ovs-ofctl")
        .args(["-O", "OpenFlow13", "add-flow", &mgmt, foreign])
        .output()
        .expect("ovs-ofctl add-flow");
    assert!(out.status.success(), "{out:?}");
    let removed = "switchyard_flows_drift_total{kind=\"removed\"}";
    assert!(
        wait_for(Duration::from_secs(10), || {
            sample(&scrape(&cluster), removed) == Some(1.0)
                && !ofctl_flows(&cluster, NODE1, &["table=SpoofGuard"])
                    .iter()
                    .any(|f| f.contains("10.99.0.1"))
        })
        .is_some(),
        "{}",
        scrape(&cluster)
    );
    let (code, text) = yardctl(&server, &["events", "--node", NODE1, "--json"]);
    assert_eq!(code, 0, "{text}");
    let events_json: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert!(
        events_json
            .iter()
            .any(|e| e["owners"] == serde_json::json!(["foreign flows"]) && e["flows_removed"] == 1),
        "{text}"
    );

    // A pod comes: the events stream says so, the metrics move.
    let mut events = rt
        .block_on(api.watch_events(proto::WatchEventsRequest {
            node: NODE1.into(),
            follow: true,
        }))
        .expect("WatchEvents")
        .into_inner();
    let d_ip = cluster.add_pod(&key("x", "d"), NODE1).expect("add pod x/d");
    let event = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let e = events
                    .message()
                    .await
                    .expect("event stream")
                    .expect("stream open");
                if e.owners.iter().any(|o| o == "pod x/d") {
                    return e;
                }
            }
        })
        .await
        .expect("an event naming pod x/d")
    });
    assert_eq!(event.node, NODE1);
    let d_flows = ofctl_flows(
        &cluster,
        NODE1,
        &[&format!(
            "cookie={:#x}/-1",
            switchyard::ids::pod_cookie(d_ip)
        )],
    );
    assert!(event.flows_added as usize >= d_flows.len(), "{event:?}");
    let m1 = scrape(&cluster);
    assert_eq!(sample(&m1, pods_gauge), Some(4.0), "{m1}");
    assert_eq!(sample(&m1, adds), Some(4.0), "{m1}");
    let flows1 = sample(&m1, &installed1).expect("flows of node 1");
    assert_eq!(flows1, flows0 + d_flows.len() as f64, "{m1}");
    // The agent observes the latency after the realisation event this waited for (after
    // the port's transaction too): poll for it rather than read it once.
    assert!(
        switchyard_tests::wait_for(Duration::from_secs(10), || {
            sample(&scrape(&cluster), pod_latency).unwrap_or(0.0) > latency0
        })
        .is_some(),
        "no pod realisation latency observed for x/d:\n{}",
        scrape(&cluster)
    );
    assert!(sample(&m1, "switchyard_bundle_changes_count").unwrap_or(0.0) > 0.0);
    // The recent events without following: the whole-switch realisation at the start too.
    let recent: Vec<proto::RealisationEvent> = rt.block_on(async {
        let mut s = api
            .watch_events(proto::WatchEventsRequest {
                node: NODE1.into(),
                follow: false,
            })
            .await
            .expect("WatchEvents")
            .into_inner();
        let mut all = Vec::new();
        while let Some(e) = s.message().await.expect("event") {
            all.push(e);
        }
        all
    });
    assert!(recent.iter().any(|e| e.owners == ["all"]), "{recent:?}");
    assert!(recent.iter().all(|e| e.node == NODE1));

    // ... and goes.
    cluster.delete_pod(&key("x", "d")).expect("delete pod x/d");
    assert!(
        wait_for(Duration::from_secs(10), || {
            let m = scrape(&cluster);
            sample(&m, pods_gauge) == Some(3.0) && sample(&m, &installed1) == Some(flows0)
        })
        .is_some(),
        "{}",
        scrape(&cluster)
    );
    let m2 = scrape(&cluster);
    assert!(sample(&m2, dels).unwrap_or(0.0) >= 1.0, "{m2}");

    // DiffFlows finds what someone else deleted. The agent puts such flows back as soon as
    // the switch reports them, so it is kept busy first: node 1's ovsdb-server is stopped
    // (SIGSTOP) and a new pod attached, so the agent sends the pod's flows (they go before
    // its port's transaction) and then waits for its OVSDB transaction. A flow deleted
    // meanwhile stays deleted until the server runs again.
    let e = key("x", "e");
    cluster
        .apply_document(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "e", "namespace": "x"},
            "spec": {"nodeName": NODE1, "containers": [{"name": "main", "image": "demo"}]},
        }))
        .expect("pod x/e in the cluster file");
    let e_netns = switchyard_testbed::Netns::create(&switchyard_tests::unique_name("ade"))
        .expect("x/e's netns");
    let e_container = "c-admin-e".to_owned();
    let flow_count = |cluster: &DemoCluster| {
        cluster
            .dump_flows(NODE1, &["--no-stats"])
            .map(|f| f.lines().count())
            .unwrap_or(0)
    };
    let flows_before = flow_count(&cluster);
    let db_pid = nix::unistd::Pid::from_raw(
        switchyard_testbed::read_pidfile(&cluster.nodes[NODE1].ovs.dir().join("ovsdb-server.pid"))
            .expect("ovsdb-server pid"),
    );
    let a_spoof = format!(
        "cookie={:#x}/-1,table=SpoofGuard",
        switchyard::ids::pod_cookie(a_ip)
    );
    let deleted = ofctl_flows(&cluster, NODE1, &[&a_spoof]);
    assert!(!deleted.is_empty());
    nix::sys::signal::kill(db_pid, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP");
    let result = std::thread::scope(|scope| {
        let add = scope.spawn(|| cluster.cni("ADD", NODE1, &e, &e_container, &e_netns.path()));
        let busy = wait_for(Duration::from_secs(10), || {
            flow_count(&cluster) > flows_before
        });
        let mgmt = cluster.nodes[NODE1].ovs.mgmt_target("br-int");
        let out = Command::new("ovs-ofctl")
            .args(["-O", "OpenFlow13", "del-flows", &mgmt, &a_spoof])
            .output()
            .expect("ovs-ofctl del-flows");
        let d = diff(&mut api);
        let (code, text) = yardctl(&server, &["diff", NODE1]);
        nix::sys::signal::kill(db_pid, nix::sys::signal::Signal::SIGCONT).expect("SIGCONT");
        let added = add.join();
        (busy, out, d, code, text, added)
    });
    let (busy, out, d, code, text, added) = result;
    assert!(busy.is_some(), "the agent never installed x/e's flows");
    assert!(
        matches!(&added, Ok(Ok((true, _)))),
        "ADD x/e after ovsdb-server ran again: {added:?}"
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        sorted(d.missing.iter().map(|f| f.text.clone()).collect()),
        sorted(deleted.clone()),
        "DiffFlows must list exactly the flows deleted by hand: {d:?}"
    );
    assert!(d.missing.iter().all(|f| f.owner == "pod x/a"), "{d:?}");
    assert!(d.unexpected.is_empty() && d.changed.is_empty(), "{d:?}");
    assert_eq!(code, 1, "yardctl diff exits 1 when they differ: {text}");
    assert!(
        text.contains("missing") && text.contains("pod x/a"),
        "{text}"
    );
    // The server runs again: the agent puts the flows back, the diff is empty.
    assert!(
        wait_for(Duration::from_secs(30), || {
            let d = diff(&mut api);
            d.missing.is_empty() && d.unexpected.is_empty() && d.changed.is_empty()
        })
        .is_some(),
        "never converged again: {:?}\n{}",
        diff(&mut api),
        cluster.controller_log_tail(30)
    );
    assert_eq!(
        sorted(ofctl_flows(&cluster, NODE1, &[&a_spoof])),
        sorted(deleted)
    );
    assert_eq!(yardctl(&server, &["diff", NODE1]).0, 0);
    let (deleted_e, out) = cluster
        .cni("DEL", NODE1, &e, &e_container, &e_netns.path())
        .expect("DEL x/e");
    assert!(deleted_e, "DEL x/e: {out}");
    cluster
        .delete_document("Pod", &e)
        .expect("x/e out of the file");
    cluster.delete_pod(&key("x", "b")).expect("delete pod x/b");
}

/// Starts `switchyard controller` with a cluster file of one node and `extra` flags; the
/// child and the temp dir that holds its sockets.
fn start_controller(dir: &Path, extra: &[&str]) -> Child {
    let cluster = dir.join("cluster.yaml");
    std::fs::write(
        &cluster,
        "apiVersion: v1\nkind: Node\nmetadata: {name: ad-tls}\nspec: {podCIDR: \"10.253.1.0/24\"}\nstatus: {addresses: [{type: InternalIP, address: 192.168.253.1}]}\n",
    )
    .unwrap();
    let d = dir.display();
    let mut args: Vec<String> = [
        "controller",
        "--cluster-file",
        &cluster.display().to_string(),
        "--ovsdb-template",
        &format!("unix:{d}/{{node}}-db.sock"),
        "--openflow-listen",
        &format!("punix:{d}/ofp.sock"),
        "--openflow-target",
        &format!("unix:{d}/ofp.sock"),
        "--cni-listen",
        &format!("unix:{d}/cni.sock"),
        "--metrics-listen",
        "127.0.0.1:0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    Command::new(workspace_binary("switchyard"))
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("controller.log")).unwrap())
        .spawn()
        .expect("start the controller")
}

struct Stop(Child);

impl Drop for Stop {
    fn drop(&mut self) {
        // By PID: this test's own child.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn plaintext_listeners_beyond_loopback_are_refused() {
    for (flags, expected) in [
        (
            vec!["--admin-listen", "tcp:0.0.0.0:0"],
            "--admin-listen 0.0.0.0:0: refusing plaintext gRPC on a non-loopback address",
        ),
        (
            vec!["--metrics-listen", "0.0.0.0:0"],
            "--metrics-listen 0.0.0.0:0: refusing plaintext HTTP on a non-loopback address",
        ),
        (
            vec!["--admin-listen", "tcp:127.0.0.1:0", "--admin-tls-ca", "/x"],
            "missing --admin-tls-cert, --admin-tls-key",
        ),
    ] {
        let mut all = vec![
            "controller",
            "--openflow-target",
            "unix:/nonexistent",
            "--cluster-file",
            "/nonexistent",
        ];
        all.extend(flags.iter().copied());
        let out = Command::new(workspace_binary("switchyard"))
            .args(&all)
            .output()
            .expect("run switchyard");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(stderr.contains(expected), "{flags:?}: {stderr}");
    }
}

/// Starts the controller with the admin API on a free loopback port with mutual TLS from
/// `files`; returns it, its `--admin-listen` target and the port.
fn start_tls_controller(dir: &Path, files: &TlsFiles) -> (Stop, String, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let listen = format!("tcp:127.0.0.1:{port}");
    let controller = Stop(start_controller(
        dir,
        &[
            "--admin-listen",
            &listen,
            "--admin-tls-ca",
            files.ca.to_str().unwrap(),
            "--admin-tls-cert",
            files.cert.to_str().unwrap(),
            "--admin-tls-key",
            files.key.to_str().unwrap(),
        ],
    ));
    (controller, listen, port)
}

/// A CA named `ca_name`, and a server and a client certificate it signed (PEM files in
/// `dir`).
fn make_certs(dir: &Path, ca_name: &str) -> (TlsFiles, TlsFiles) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let leaf = |name: &str, purpose: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate().unwrap();
        let mut p =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![purpose];
        let cert = p.signed_by(&key, &ca_cert, &ca_key).unwrap();
        let cert_path = dir.join(format!("{name}.crt"));
        let key_path = dir.join(format!("{name}.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    };
    let ca_path = dir.join("ca.crt");
    std::fs::write(&ca_path, ca_cert.pem()).unwrap();
    let (server_cert, server_key) = leaf("server", ExtendedKeyUsagePurpose::ServerAuth);
    let (client_cert, client_key) = leaf("client", ExtendedKeyUsagePurpose::ClientAuth);
    (
        TlsFiles {
            ca: ca_path.clone(),
            cert: server_cert,
            key: server_key,
        },
        TlsFiles {
            ca: ca_path,
            cert: client_cert,
            key: client_key,
        },
    )
}

#[test]
fn tcp_with_mutual_tls_serves_clients_with_a_certificate_only() {
    let dir = tempfile::tempdir().unwrap();
    let (server_tls, client_tls) = make_certs(dir.path(), "switchyard test CA");
    let (_controller, listen, port) = start_tls_controller(dir.path(), &server_tls);
    assert!(
        wait_for(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .is_some(),
        "the controller never listened: {}",
        std::fs::read_to_string(dir.path().join("controller.log")).unwrap_or_default()
    );
    let rt = runtime();
    // With the client certificate: answers.
    assert_eq!(
        first_status_over_tls(&rt, &listen, &client_tls),
        Ok(vec!["ad-tls".to_owned()]),
        "Status over mTLS: {}",
        std::fs::read_to_string(dir.path().join("controller.log")).unwrap_or_default()
    );
    // yardctl with the same files.
    let (code, out) = {
        let o = Command::new(workspace_binary("yardctl"))
            .args([
                "status",
                "--json",
                "--server",
                &listen,
                "--tls-ca",
                client_tls.ca.to_str().unwrap(),
                "--tls-cert",
                client_tls.cert.to_str().unwrap(),
                "--tls-key",
                client_tls.key.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        (
            o.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    };
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("\"ad-tls\""), "{out}");
    // Without a client certificate (the server's own CA trusted, no identity): refused.
    let no_identity = rt.block_on(async {
        use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
        let ca = std::fs::read(&client_tls.ca).unwrap();
        let channel = Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
            .unwrap()
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(ca))
                    .domain_name("127.0.0.1"),
            )
            .unwrap()
            .connect()
            .await;
        match channel {
            Err(e) => Err(e.to_string()),
            Ok(ch) => proto::admin_client::AdminClient::new(ch)
                .status(proto::StatusRequest {})
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        }
    });
    assert!(
        no_identity.is_err(),
        "a client without a certificate was served"
    );
    // Plaintext to the TLS port: no answer.
    let plain = rt.block_on(async {
        match client::connect(&listen, None).await {
            Err(e) => Err(e.to_string()),
            Ok(mut c) => c
                .status(proto::StatusRequest {})
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        }
    });
    assert!(plain.is_err(), "plaintext was served on the mTLS port");
}

/// Writes `contents` to `path` through a temporary file and a rename, as a Secret volume
/// update does: a reader never sees half a file, and `path` gets a new inode (so the
/// controller's (inode, size, mtime) check sees the change whatever the clock says).
fn replace_file(path: &Path, contents: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// `Status` over mutual TLS on a new connection, with `tls` (the CA the client trusts, its
/// certificate and key): the node names, or why it failed.
fn status_over_tls(
    rt: &tokio::runtime::Runtime,
    listen: &str,
    tls: &TlsFiles,
) -> Result<Vec<String>, String> {
    rt.block_on(async {
        let mut c = client::connect(listen, Some(tls))
            .await
            .map_err(|e| e.to_string())?;
        let status = c
            .status(proto::StatusRequest {})
            .await
            .map_err(|e| e.to_string())?;
        Ok(status
            .into_inner()
            .nodes
            .into_iter()
            .map(|n| n.name)
            .collect())
    })
}

/// [`status_over_tls`] until it names a node: the listener is open before the controller
/// has read its cluster file. The last answer.
fn first_status_over_tls(
    rt: &tokio::runtime::Runtime,
    listen: &str,
    tls: &TlsFiles,
) -> Result<Vec<String>, String> {
    let mut answer = Err("no answer yet".to_owned());
    wait_for(Duration::from_secs(20), || {
        answer = status_over_tls(rt, listen, tls);
        answer.as_ref().is_ok_and(|nodes| !nodes.is_empty())
    });
    answer
}

#[test]
fn a_rotated_admin_ca_and_certificate_are_used_from_the_next_connection_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let pki = |name: &str| {
        let sub = dir.path().join(name);
        std::fs::create_dir(&sub).unwrap();
        make_certs(&sub, &format!("switchyard test {name}"))
    };
    let (server_a, client_a) = pki("CA-A");
    let (server_b, client_b) = pki("CA-B");
    let (_, client_c) = pki("CA-C");
    // The controller's files, CA-A's to begin with; replaced in place below.
    let live = dir.path().join("admin-tls");
    std::fs::create_dir(&live).unwrap();
    let served = TlsFiles {
        ca: live.join("ca.crt"),
        cert: live.join("server.crt"),
        key: live.join("server.key"),
    };
    let read = |path: &Path| std::fs::read(path).unwrap();
    std::fs::write(&served.ca, read(&server_a.ca)).unwrap();
    std::fs::write(&served.cert, read(&server_a.cert)).unwrap();
    std::fs::write(&served.key, read(&server_a.key)).unwrap();
    let (mut controller, listen, port) = start_tls_controller(dir.path(), &served);
    let log = || std::fs::read_to_string(dir.path().join("controller.log")).unwrap_or_default();
    assert!(
        wait_for(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .is_some(),
        "the controller never listened: {}",
        log()
    );
    let pid = controller.0.id();
    let rt = runtime();
    let node = vec!["ad-tls".to_owned()];
    assert_eq!(
        first_status_over_tls(&rt, &listen, &client_a),
        Ok(node.clone()),
        "a CA-A client before the rotation: {}",
        log()
    );
    assert!(
        status_over_tls(&rt, &listen, &client_b).is_err(),
        "a CA-B client was served before the controller trusted CA-B"
    );

    // The rotation: the CA file becomes the bundle of CA-A and CA-B, the server's key and
    // certificate become CA-B's (key first; until the certificate follows, the pair does
    // not match and the controller keeps presenting the old one).
    replace_file(
        &served.ca,
        &[read(&server_a.ca), read(&server_b.ca)].concat(),
    );
    replace_file(&served.key, &read(&server_b.key));
    replace_file(&served.cert, &read(&server_b.cert));

    // A new connection from a client that trusts only CA-B and presents CA-B's certificate.
    assert_eq!(
        status_over_tls(&rt, &listen, &client_b),
        Ok(node.clone()),
        "a CA-B client after the rotation: {}",
        log()
    );
    // During the overlap a CA-A client certificate is still accepted (the client now
    // trusting CA-B, which signed the server's new certificate).
    let client_a_trusting_b = TlsFiles {
        ca: client_b.ca.clone(),
        ..client_a.clone()
    };
    assert_eq!(
        status_over_tls(&rt, &listen, &client_a_trusting_b),
        Ok(node),
        "a CA-A client certificate during the overlap: {}",
        log()
    );
    // A certificate from an unrelated CA is refused (the client trusts the server's CA, so
    // it is the controller that refuses).
    let stranger = TlsFiles {
        ca: client_b.ca.clone(),
        ..client_c
    };
    assert!(
        status_over_tls(&rt, &listen, &stranger).is_err(),
        "a client with a CA-C certificate was served"
    );
    // All of it by the process started at the beginning.
    assert!(
        controller.0.try_wait().unwrap().is_none(),
        "the controller (pid {pid}) exited: {}",
        log()
    );
}
