//! Services end to end: ClusterIP Services from Service and EndpointSlice objects in the
//! cluster file, realised by the controller on real OVS (userspace datapath), judged by real
//! TCP and UDP sockets in pod network namespaces and by `ovs-ofctl dump-groups`. Every
//! endpoint pod answers with its name and the port it was reached on, so a probe says which
//! endpoint (and which DNAT port) a connection to the ClusterIP landed on.
//!
//! Cluster: nodes n1 and n2; client `cl1` on n1 and `cl2` on n2; endpoints `web-1` (n1),
//! `web-2` (n2), `web-3` (n2). Service `web` (10.96.0.10): `http` TCP 80 and `dns` UDP 53;
//! its slices give each endpoint its own target port (8080 in slice `web-a`, 9090 in
//! `web-b`), UDP 5353 in both.
//!
//! The cluster file is watched: a change reaches the switches asynchronously, so a probe
//! that does not see it yet is repeated until a generous deadline (a convergence wait, never
//! a timing assertion).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard::pipeline::Encap;
use switchyard_demo::{DemoCluster, DemoOptions};
use switchyard_tests::pod_servers::{Listen, PodServers, enter};
use switchyard_tests::{require_root, workspace_binary};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const TCP_PORTS: [u16; 2] = [8080, 9090];
const UDP_PORT: u16 = 5353;
const TIMEOUT: Duration = Duration::from_millis(1500);
const CONVERGE: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    Tcp,
    Udp,
}

fn cluster_yaml() -> String {
    let mut docs: Vec<Value> = vec![];
    for (i, n) in ["n1", "n2"].iter().enumerate() {
        let cidr = format!("10.244.{}.0/24", i + 1);
        docs.push(
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": n},
            "spec": {"podCIDR": cidr, "podCIDRs": [cidr]}}),
        );
    }
    for (p, node) in [
        ("cl1", "n1"),
        ("cl2", "n2"),
        ("web-1", "n1"),
        ("web-2", "n2"),
        ("web-3", "n2"),
    ] {
        docs.push(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": p, "namespace": "default", "labels": {"app": p}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "agnhost"}]}}));
    }
    docs.iter()
        .map(|d| serde_json::to_string(d).expect("json"))
        .collect::<Vec<_>>()
        .join("\n---\n")
}

fn service(name: &str, ip: &str, ports: Value, extra: Value) -> Value {
    let mut doc = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"clusterIP": ip, "clusterIPs": [ip], "ports": ports}});
    if let (Some(d), Value::Object(e)) = (doc.as_object_mut(), extra) {
        for (k, v) in e {
            match (d.get_mut(&k), v) {
                (Some(Value::Object(a)), Value::Object(b)) => a.extend(b),
                (_, v) => {
                    d.insert(k, v);
                }
            }
        }
    }
    doc
}

fn slice(name: &str, service: &str, ports: Value, endpoints: Vec<Value>) -> Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "default",
            "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4", "ports": ports, "endpoints": endpoints})
}

fn web_service() -> Value {
    service(
        "web",
        &VIP.to_string(),
        json!([{"name": "http", "port": 80, "protocol": "TCP"},
               {"name": "dns", "port": 53, "protocol": "UDP"}]),
        json!({}),
    )
}

/// TCP servers on 8080 and 9090 and a UDP server on 5353 inside one pod; each answers
/// `name:port`.
fn start_servers(netns: PathBuf, name: String) -> PodServers {
    let mut servers: Vec<(Listen, String)> = TCP_PORTS
        .iter()
        .map(|p| (Listen::Tcp(*p), format!("{name}:{p}")))
        .collect();
    servers.push((Listen::Udp(UDP_PORT), format!("{name}:{UDP_PORT}")));
    PodServers::start(netns, servers)
}

/// What one new connection from inside `netns` got: the answer, or why there was none.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Answer(String),
    Refused,
    Failed(String),
}

/// One new TCP connection (or connected UDP socket) from a pod, in a thread of its own (it
/// enters the pod's namespace).
fn probe(netns: &Path, dst: Ipv4Addr, proto: Proto, port: u16) -> Outcome {
    let netns = netns.to_owned();
    std::thread::spawn(move || probe_here(&netns, dst, proto, port))
        .join()
        .expect("probe thread")
}

fn probe_here(netns: &Path, dst: Ipv4Addr, proto: Proto, port: u16) -> Outcome {
    if let Err(e) = enter(netns) {
        return Outcome::Failed(format!("setns: {e}"));
    }
    let addr = SocketAddr::from((dst, port));
    match proto {
        Proto::Tcp => {
            let mut s = match TcpStream::connect_timeout(&addr, TIMEOUT) {
                Ok(s) => s,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    return Outcome::Refused;
                }
                Err(e) => return Outcome::Failed(e.to_string()),
            };
            let _ = s.set_read_timeout(Some(TIMEOUT));
            if let Err(e) = s.write_all(b"hello\n") {
                return Outcome::Failed(e.to_string());
            }
            let mut line = String::new();
            match BufReader::new(s).read_line(&mut line) {
                Ok(n) if n > 0 => Outcome::Answer(line.trim().to_owned()),
                Ok(_) => Outcome::Failed("closed".into()),
                Err(e) => Outcome::Failed(e.to_string()),
            }
        }
        Proto::Udp => {
            let Ok(s) = UdpSocket::bind(("0.0.0.0", 0)) else {
                return Outcome::Failed("bind".into());
            };
            let _ = s.set_read_timeout(Some(TIMEOUT));
            if s.connect(addr).is_err() || s.send(b"hello").is_err() {
                return Outcome::Failed("send".into());
            }
            let mut buf = [0u8; 64];
            match s.recv(&mut buf) {
                Ok(n) => Outcome::Answer(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Outcome::Refused,
                Err(e) => Outcome::Failed(e.to_string()),
            }
        }
    }
}

struct Services {
    cluster: DemoCluster,
    _servers: Vec<PodServers>,
}

impl Services {
    fn start(objects: Vec<Value>) -> Services {
        require_root();
        let mut cluster = DemoCluster::start(DemoOptions {
            cluster_yaml: cluster_yaml(),
            encap: Encap::Geneve,
            controller_bin: workspace_binary("switchyard"),
            cni_bin: workspace_binary("switchyard-cni"),
        })
        .unwrap_or_else(|e| panic!("demo cluster: {e}"));
        let servers = cluster
            .pods
            .values()
            .filter(|p| p.key.name.starts_with("web"))
            .map(|p| start_servers(p.netns.path(), p.key.name.clone()))
            .collect();
        for o in objects {
            cluster.apply_document(o).expect("apply");
        }
        Services {
            cluster,
            _servers: servers,
        }
    }

    fn ip(&self, pod: &str) -> String {
        self.cluster.pods[&switchyard::source::ObjectKey::new("default", pod)]
            .ip
            .to_string()
    }

    fn netns(&self, pod: &str) -> PathBuf {
        self.cluster.pods[&switchyard::source::ObjectKey::new("default", pod)]
            .netns
            .path()
    }

    fn endpoint(&self, pod: &str, conditions: Value) -> Value {
        let node = &self.cluster.pods[&switchyard::source::ObjectKey::new("default", pod)].node;
        json!({"addresses": [self.ip(pod)], "conditions": conditions, "nodeName": node})
    }

    /// The answers of `tries` new connections from `from` to `dst:port`.
    fn answers(
        &self,
        from: &str,
        dst: Ipv4Addr,
        proto: Proto,
        port: u16,
        tries: usize,
    ) -> Vec<Outcome> {
        (0..tries)
            .map(|_| probe(&self.netns(from), dst, proto, port))
            .collect()
    }

    /// Probes until the set of answers from `from` is exactly `expected` (every answer one
    /// of them, each seen), or panics with what was seen and the switches' state.
    fn expect_answers(
        &self,
        from: &str,
        dst: Ipv4Addr,
        proto: Proto,
        port: u16,
        expected: &[&str],
    ) {
        let want: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
        let deadline = Instant::now() + CONVERGE;
        loop {
            let got = self.answers(from, dst, proto, port, 24);
            let seen: BTreeSet<String> = got
                .iter()
                .filter_map(|o| match o {
                    Outcome::Answer(a) => Some(a.clone()),
                    _ => None,
                })
                .collect();
            let all_answered = got.iter().all(|o| matches!(o, Outcome::Answer(_)));
            if seen == want && all_answered {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "{from} -> {dst}:{port} {proto:?}: wanted answers {want:?}, got {got:?}\n{}",
                    self.diagnostics()
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn groups(&self, node: &str) -> String {
        let target = self.cluster.nodes[node].ovs.mgmt_target("br-int");
        let out = switchyard_tests::run_output(
            "ovs-ofctl",
            &["-O", "OpenFlow13", "dump-groups", target.as_str()],
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn diagnostics(&self) -> String {
        let mut s = String::new();
        for node in self.cluster.nodes.keys() {
            let flows = self
                .cluster
                .dump_flows(node, &[])
                .unwrap_or_else(|e| e.to_string());
            let lines: Vec<&str> = flows
                .lines()
                .filter(|l| {
                    [
                        "ServiceLb",
                        "EndpointDnat",
                        "table=Conntrack,",
                        "ConntrackCommit",
                        "table=Classifier",
                        "table=ArpResponder",
                    ]
                    .iter()
                    .any(|t| l.contains(t))
                })
                .collect();
            s.push_str(&format!(
                "--- {node} service flows ---\n{}\n--- {node} groups ---\n{}\n",
                lines.join("\n"),
                self.groups(node)
            ));
        }
        s.push_str(&self.cluster.controller_log_tail(30));
        s
    }

    /// Waits until `check` holds for the node's group dump.
    fn wait_groups(&self, node: &str, what: &str, check: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + CONVERGE;
        while !check(&self.groups(node)) {
            if Instant::now() > deadline {
                panic!(
                    "{node}: groups never showed {what}:\n{}",
                    self.diagnostics()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The two slices of `web`: web-1 at 8080 (slice web-a) and web-2 at 9090 (web-b), UDP 5353
/// in both; web-3 is in web-b but not ready; web-1 appears in both slices (a duplicate).
fn web_slices(s: &Services) -> Vec<Value> {
    vec![
        slice(
            "web-a",
            "web",
            json!([{"name": "http", "port": 8080, "protocol": "TCP"},
                   {"name": "dns", "port": UDP_PORT, "protocol": "UDP"}]),
            vec![s.endpoint("web-1", json!({"ready": true}))],
        ),
        slice(
            "web-b",
            "web",
            json!([{"name": "http", "port": 9090},
                   {"name": "dns", "port": UDP_PORT, "protocol": "UDP"}]),
            vec![
                s.endpoint("web-2", json!({})),
                s.endpoint(
                    "web-3",
                    json!({"ready": false, "serving": true, "terminating": false}),
                ),
            ],
        ),
        slice(
            "web-dup",
            "web",
            json!([{"name": "http", "port": 8080}]),
            vec![s.endpoint("web-1", json!({"ready": true}))],
        ),
    ]
}

#[test]
fn cluster_ip_balances_tcp_and_udp_over_ready_endpoints_with_per_slice_ports() {
    switchyard_tests::skip_unless_root!();
    let mut s = Services::start(vec![web_service()]);
    for doc in web_slices(&s) {
        s.cluster.apply_document(doc).expect("apply");
    }
    // From a client on n1 (web-2 is across the tunnel) and one on n2 (web-1 is).
    for client in ["cl1", "cl2"] {
        s.expect_answers(client, VIP, Proto::Tcp, 80, &["web-1:8080", "web-2:9090"]);
        // UDP too: each try is a new socket (a new source port), and the port's endpoints
        // are picked by a hash with the ports (multipath; OVS's select groups alone hash
        // UDP without them, so one client would always reach one endpoint).
        s.expect_answers(client, VIP, Proto::Udp, 53, &["web-1:5353", "web-2:5353"]);
    }
    // TCP: one select group with one bucket per distinct ready endpoint; UDP: one group per
    // endpoint, each with its own dispatch flow after the multipath hash.
    for node in ["n1", "n2"] {
        let groups = s.groups(node);
        let selects: Vec<&str> = groups
            .lines()
            .filter(|l| l.contains("type=select"))
            .collect();
        let tcp: Vec<&&str> = selects.iter().filter(|g| !g.contains(":5353)")).collect();
        let udp: Vec<&&str> = selects.iter().filter(|g| g.contains(":5353)")).collect();
        assert_eq!(tcp.len(), 1, "{groups}");
        assert_eq!(tcp[0].matches("bucket=").count(), 2, "{groups}");
        assert_eq!(udp.len(), 2, "{groups}");
        assert!(
            udp.iter().all(|g| g.matches("bucket=").count() == 1),
            "{groups}"
        );
        let flows = s.cluster.dump_flows(node, &[]).expect("dump-flows");
        assert!(
            flows.lines().any(|l| l.contains("nw_dst=10.96.0.10")
                && l.contains("tp_dst=53")
                && l.contains("multipath(symmetric_l3l4+udp")),
            "{flows}"
        );
    }
}

#[test]
fn an_endpoint_change_modifies_the_group_in_place_and_keeps_established_connections() {
    switchyard_tests::skip_unless_root!();
    let mut s = Services::start(vec![web_service()]);
    for doc in web_slices(&s) {
        s.cluster.apply_document(doc).expect("apply");
    }
    s.expect_answers("cl1", VIP, Proto::Tcp, 80, &["web-1:8080", "web-2:9090"]);
    let before = s.groups("n1");
    let http_group = |dump: &str| -> Option<String> {
        dump.lines()
            .find(|l| l.contains("type=select") && l.contains("nat(dst=") && l.contains(":9090)"))
            .and_then(|l| {
                l.split(',')
                    .find(|f| f.trim_start().starts_with("group_id="))
            })
            .map(|f| f.trim().to_owned())
    };
    let id_before = http_group(&before).expect("the http group");

    // An established connection to web-2 (through the tunnel).
    let netns = s.netns("cl1");
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (res_tx, res_rx) = std::sync::mpsc::channel::<Vec<String>>();
    let conn = std::thread::spawn(move || {
        enter(&netns).expect("netns");
        // Connect until the group picks web-2.
        let mut stream = loop {
            let mut st =
                TcpStream::connect_timeout(&SocketAddr::from((VIP, 80)), TIMEOUT).expect("connect");
            st.set_read_timeout(Some(TIMEOUT)).ok();
            st.write_all(b"hi\n").expect("write");
            let mut line = String::new();
            BufReader::new(st.try_clone().expect("clone"))
                .read_line(&mut line)
                .expect("read");
            if line.trim() == "web-2:9090" {
                break st;
            }
        };
        let mut answers = vec![];
        rx.recv().ok();
        stream
            .write_all(b"again\n")
            .expect("write after the change");
        let mut line = String::new();
        let _ = BufReader::new(stream.try_clone().expect("clone")).read_line(&mut line);
        answers.push(line.trim().to_owned());
        res_tx.send(answers).ok();
    });

    // web-1 leaves, web-3 becomes ready (and web-2 stays).
    let ip3 = s.ip("web-3");
    s.cluster
        .apply_document(slice(
            "web-a",
            "web",
            json!([{"name": "http", "port": 8080}, {"name": "dns", "port": UDP_PORT, "protocol": "UDP"}]),
            vec![],
        ))
        .expect("apply");
    s.cluster
        .apply_document(slice(
            "web-dup",
            "web",
            json!([{"name": "http", "port": 8080}]),
            vec![],
        ))
        .expect("apply");
    s.cluster
        .apply_document(slice(
            "web-b",
            "web",
            json!([{"name": "http", "port": 9090}, {"name": "dns", "port": UDP_PORT, "protocol": "UDP"}]),
            vec![s.endpoint("web-2", json!({})), s.endpoint("web-3", json!({"ready": true}))],
        ))
        .expect("apply");
    let ip1 = s.ip("web-1");
    let dnat = |ip: &str| format!("nat(dst={ip}:");
    let (h1, h3) = (dnat(&ip1), dnat(&ip3));
    s.wait_groups("n1", "web-3 in and web-1 out", |g| {
        g.contains(&h3) && !g.contains(&h1)
    });
    let after = s.groups("n1");
    assert_eq!(
        http_group(&after).as_deref(),
        Some(id_before.as_str()),
        "the group keeps its id (modified in place):\nbefore:\n{before}\nafter:\n{after}"
    );
    tx.send(()).ok();
    let answers = res_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("established connection result");
    conn.join().expect("connection thread");
    assert_eq!(
        answers,
        vec!["web-2:9090".to_string()],
        "the established connection survives"
    );
    s.expect_answers("cl1", VIP, Proto::Tcp, 80, &["web-2:9090", "web-3:9090"]);
}

#[test]
fn hairpin_a_pod_reaches_itself_through_its_service() {
    switchyard_tests::skip_unless_root!();
    let mut s = Services::start(vec![service(
        "self",
        "10.96.0.20",
        json!([{"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}]),
        json!({}),
    )]);
    let doc = slice(
        "self-a",
        "self",
        json!([{"name": "http", "port": 8080}, {"name": "dns", "port": UDP_PORT, "protocol": "UDP"}]),
        vec![s.endpoint("web-1", json!({}))],
    );
    s.cluster.apply_document(doc).expect("apply");
    let vip: Ipv4Addr = "10.96.0.20".parse().unwrap();
    s.expect_answers("web-1", vip, Proto::Tcp, 80, &["web-1:8080"]);
    s.expect_answers("web-1", vip, Proto::Udp, 53, &["web-1:5353"]);
    // And from another pod, as usual.
    s.expect_answers("cl2", vip, Proto::Tcp, 80, &["web-1:8080"]);
}

#[test]
fn headless_external_name_and_labelled_services_program_nothing() {
    switchyard_tests::skip_unless_root!();
    let mut s = Services::start(vec![
        service("headless", "None", json!([{"port": 80}]), json!({})),
        service(
            "ext",
            "10.96.0.31",
            json!([{"port": 80}]),
            json!({"spec": {"type": "ExternalName", "externalName": "example.com"}}),
        ),
        service(
            "label-headless",
            "10.96.0.32",
            json!([{"port": 80}]),
            json!({"metadata": {"labels": {"service.kubernetes.io/headless": ""}}}),
        ),
        service(
            "other-proxy",
            "10.96.0.33",
            json!([{"port": 80}]),
            json!({"metadata": {"labels": {"service.kubernetes.io/service-proxy-name": "other"}}}),
        ),
        // A proxied one, as the control: its flows show the others' absence is not a lag.
        service("control", "10.96.0.34", json!([{"port": 80}]), json!({})),
    ]);
    for svc in [
        "headless",
        "ext",
        "label-headless",
        "other-proxy",
        "control",
    ] {
        let doc = slice(
            &format!("{svc}-a"),
            svc,
            json!([{"port": 8080}]),
            vec![s.endpoint("web-1", json!({}))],
        );
        s.cluster.apply_document(doc).expect("apply");
    }
    s.expect_answers(
        "cl1",
        "10.96.0.34".parse().unwrap(),
        Proto::Tcp,
        80,
        &["web-1:8080"],
    );
    for node in ["n1", "n2"] {
        let flows = s.cluster.dump_flows(node, &[]).expect("dump-flows");
        for ip in ["10.96.0.31", "10.96.0.32", "10.96.0.33"] {
            assert!(!flows.contains(ip), "{node} has flows for {ip}:\n{flows}");
        }
        let groups = s.groups(node);
        assert_eq!(groups.matches("type=select").count(), 1, "{groups}");
    }
    for ip in ["10.96.0.31", "10.96.0.32", "10.96.0.33"] {
        let o = probe(&s.netns("cl1"), ip.parse().unwrap(), Proto::Tcp, 80);
        assert!(!matches!(o, Outcome::Answer(_)), "{ip}: {o:?}");
    }
}

#[test]
fn a_service_without_usable_endpoints_refuses_tcp_and_udp_clients() {
    switchyard_tests::skip_unless_root!();
    let mut s = Services::start(vec![service(
        "empty",
        "10.96.0.40",
        json!([{"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}]),
        json!({}),
    )]);
    // Only an endpoint that is neither ready nor serving-and-terminating.
    let doc = slice(
        "empty-a",
        "empty",
        json!([{"name": "http", "port": 8080}, {"name": "dns", "port": UDP_PORT, "protocol": "UDP"}]),
        vec![s.endpoint(
            "web-1",
            json!({"ready": false, "serving": false, "terminating": true}),
        )],
    );
    s.cluster.apply_document(doc).expect("apply");
    let vip: Ipv4Addr = "10.96.0.40".parse().unwrap();
    for (client, proto, port) in [
        ("cl1", Proto::Tcp, 80),
        ("cl2", Proto::Udp, 53),
        ("cl1", Proto::Udp, 53),
    ] {
        let deadline = Instant::now() + CONVERGE;
        loop {
            let o = probe(&s.netns(client), vip, proto, port);
            if o == Outcome::Refused {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{client} -> {vip}:{port} {proto:?}: {o:?}, not refused\n{}",
                s.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    // Once the endpoint is ready, the same Service answers.
    let doc = slice(
        "empty-a",
        "empty",
        json!([{"name": "http", "port": 8080}, {"name": "dns", "port": UDP_PORT, "protocol": "UDP"}]),
        vec![s.endpoint("web-1", json!({"ready": true}))],
    );
    s.cluster.apply_document(doc).expect("apply");
    s.expect_answers("cl1", vip, Proto::Tcp, 80, &["web-1:8080"]);
}

#[test]
fn session_affinity_sends_every_connection_of_a_client_to_one_endpoint() {
    switchyard_tests::skip_unless_root!();
    let mut s = Services::start(vec![
        service(
            "sticky",
            "10.96.0.50",
            json!([{"name": "http", "port": 80}]),
            json!({"spec": {"sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}}}}),
        ),
        // The same endpoints without affinity, as the control: there both answer.
        service(
            "loose",
            "10.96.0.51",
            json!([{"name": "http", "port": 80}]),
            json!({}),
        ),
    ]);
    for svc in ["sticky", "loose"] {
        let doc = slice(
            &format!("{svc}-a"),
            svc,
            json!([{"name": "http", "port": 8080}]),
            vec![
                s.endpoint("web-1", json!({})),
                s.endpoint("web-2", json!({})),
            ],
        );
        s.cluster.apply_document(doc).expect("apply");
    }
    // Both kinds of bucket (the affinity's reg3, the plain DNAT) are what the demo looks for.
    s.cluster
        .wait_for_services()
        .unwrap_or_else(|missing| panic!("Services not realised: {missing}"));
    s.expect_answers(
        "cl1",
        "10.96.0.51".parse().unwrap(),
        Proto::Tcp,
        80,
        &["web-1:8080", "web-2:8080"],
    );
    for client in ["cl1", "cl2"] {
        let deadline = Instant::now() + CONVERGE;
        let got = loop {
            let got = s.answers(client, "10.96.0.50".parse().unwrap(), Proto::Tcp, 80, 24);
            if got.iter().all(|o| matches!(o, Outcome::Answer(_))) || Instant::now() > deadline {
                break got;
            }
            std::thread::sleep(Duration::from_millis(300));
        };
        let distinct: BTreeSet<&Outcome> = got.iter().collect();
        assert_eq!(
            distinct.len(),
            1,
            "{client}: every try must be answered by one pod: {got:?}\n{}",
            s.diagnostics()
        );
        assert!(matches!(got[0], Outcome::Answer(_)), "{got:?}");
    }
    // The switch learned the affinity; the controller left the learned flows alone.
    let flows = s
        .cluster
        .dump_flows("n1", &["table=SessionAffinity"])
        .expect("dump-flows");
    assert!(
        flows
            .lines()
            .any(|l| l.contains("nw_dst=10.96.0.50") && l.contains("idle_timeout=600")),
        "{flows}"
    );
}

#[test]
fn more_endpoints_than_one_group_holds_are_all_in_the_switch_groups() {
    switchyard_tests::skip_unless_root!();
    let mut s = Services::start(vec![service(
        "big",
        "10.96.0.60",
        json!([{"name": "http", "port": 80}]),
        json!({}),
    )]);
    // 1500 endpoints (an OF1.3 group_mod holds about 630 of ours, whose buckets DNAT;
    // we put 600 in one: three groups).
    let endpoints: Vec<Value> = (0..1500u32)
        .map(|i| json!({"addresses": [format!("10.250.{}.{}", i / 250, i % 250 + 1)]}))
        .collect();
    s.cluster
        .apply_document(slice(
            "big-a",
            "big",
            json!([{"name": "http", "port": 8080}]),
            endpoints,
        ))
        .expect("apply");
    let deadline = Instant::now() + CONVERGE;
    loop {
        let groups = s.groups("n1");
        let selects: Vec<&str> = groups
            .lines()
            .filter(|l| l.contains("type=select"))
            .collect();
        let buckets: usize = selects.iter().map(|g| g.matches("bucket=").count()).sum();
        let mut missing = vec![];
        for i in 0..1500u32 {
            let ip = Ipv4Addr::new(10, 250, (i / 250) as u8, (i % 250 + 1) as u8);
            let dnat = format!("nat(dst={ip}:");
            if groups.matches(&dnat).count() != 1 {
                missing.push(ip);
            }
        }
        if selects.len() == 3 && buckets == 1500 && missing.is_empty() {
            // Every group is reached: one dispatch flow each, after the multipath hash.
            let flows = s.cluster.dump_flows("n1", &[]).expect("dump-flows");
            for g in &selects {
                let id = g
                    .split(',')
                    .find_map(|f| f.trim().strip_prefix("group_id="))
                    .expect("group id");
                assert!(
                    flows.lines().any(|l| l.contains("reg7=") && l.ends_with(&format!("actions=group:{id}"))),
                    "no flow dispatches to group {id}:\n{flows}"
                );
            }
            assert!(flows.contains("multipath(symmetric_l3l4+udp"), "{flows}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "groups: {} select, {buckets} buckets, {} endpoints missing (e.g. {:?})\n{}",
            selects.len(),
            missing.len(),
            missing.first(),
            s.cluster.controller_log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Probes until `ok(outcome)` holds, or panics.
fn expect_outcome(
    s: &Services,
    from: &str,
    dst: Ipv4Addr,
    port: u16,
    what: &str,
    ok: impl Fn(&Outcome) -> bool,
) {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let o = probe(&s.netns(from), dst, Proto::Tcp, port);
        if ok(&o) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{from} -> {dst}:{port}: wanted {what}, got {o:?}\n{}",
            s.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn network_policy_applies_to_the_endpoint_after_dnat() {
    switchyard_tests::skip_unless_root!();
    let mut s = Services::start(vec![service(
        "one",
        "10.96.0.70",
        json!([{"name": "http", "port": 80}]),
        json!({}),
    )]);
    let doc = slice(
        "one-a",
        "one",
        json!([{"name": "http", "port": 8080}]),
        vec![s.endpoint("web-1", json!({}))],
    );
    s.cluster.apply_document(doc).expect("apply");
    let vip: Ipv4Addr = "10.96.0.70".parse().unwrap();
    let policy = |ports: Value| {
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "web-1-in", "namespace": "default"},
            "spec": {"podSelector": {"matchLabels": {"app": "web-1"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "cl1"}}}],
                    "ports": ports}]}})
    };
    let answered = |o: &Outcome| *o == Outcome::Answer("web-1:8080".into());
    let denied = |o: &Outcome| matches!(o, Outcome::Failed(_));
    // The pod's port (8080) allowed: the Service's port (80) reaches it, from cl1 only.
    s.cluster
        .apply_document(policy(json!([{"port": 8080, "protocol": "TCP"}])))
        .expect("apply");
    expect_outcome(&s, "cl2", vip, 80, "denied", denied);
    expect_outcome(&s, "cl1", vip, 80, "web-1:8080", answered);
    // Only the Service's port allowed: nothing reaches the pod's port.
    s.cluster
        .apply_document(policy(json!([{"port": 80, "protocol": "TCP"}])))
        .expect("apply");
    expect_outcome(&s, "cl1", vip, 80, "denied", denied);
    // Egress of the client, judged after DNAT too: cl1 may reach web-1:8080 only.
    s.cluster
        .delete_document(
            "NetworkPolicy",
            &switchyard::source::ObjectKey::new("default", "web-1-in"),
        )
        .expect("delete");
    let ip1 = s.ip("web-1");
    s.cluster
        .apply_document(
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "cl1-out", "namespace": "default"},
            "spec": {"podSelector": {"matchLabels": {"app": "cl1"}}, "policyTypes": ["Egress"],
                "egress": [{"to": [{"ipBlock": {"cidr": format!("{ip1}/32")}}],
                    "ports": [{"port": 8080, "protocol": "TCP"}]}]}}),
        )
        .expect("apply");
    expect_outcome(&s, "cl1", vip, 80, "web-1:8080", answered);
}

/// SCTP by raw IP sockets (this machine's kernel has no SCTP stack, so the pods speak it
/// with hand-made packets): an INIT (RFC 9260 §3.3.2) with the CRC32c checksum.
mod sctp {
    use std::net::{Ipv4Addr, SocketAddrV4};
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    use switchyard_tests::pod_servers::enter;

    const INIT: u8 = 1;
    const INIT_ACK: u8 = 2;

    fn crc32c(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for b in data {
            crc ^= u32::from(*b);
            for _ in 0..8 {
                crc = (crc >> 1) ^ (0x82f6_3b78 & 0u32.wrapping_sub(crc & 1));
            }
        }
        !crc
    }

    /// An SCTP packet of one chunk (INIT or INIT ACK: initiate tag 0x1234, a_rwnd 65536,
    /// 10 streams each way, initial TSN 1).
    fn packet(sport: u16, dport: u16, vtag: u32, chunk: u8) -> Vec<u8> {
        let mut p = Vec::with_capacity(32);
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&vtag.to_be_bytes());
        p.extend_from_slice(&[0; 4]);
        p.extend_from_slice(&[chunk, 0, 0, 20]);
        p.extend_from_slice(&0x1234u32.to_be_bytes());
        p.extend_from_slice(&65536u32.to_be_bytes());
        p.extend_from_slice(&[0, 10, 0, 10, 0, 0, 0, 1]);
        let c = crc32c(&p);
        p[8..12].copy_from_slice(&c.to_le_bytes());
        p
    }

    /// An IPv4 packet as a raw socket reads it: (source, destination, IP protocol, payload).
    fn parse_ip(b: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr, u8, &[u8])> {
        let ihl = usize::from(*b.first()? & 0x0f) * 4;
        if b.len() < ihl.max(20) {
            return None;
        }
        let src = Ipv4Addr::new(b[12], b[13], b[14], b[15]);
        let dst = Ipv4Addr::new(b[16], b[17], b[18], b[19]);
        Some((src, dst, b[9], &b[ihl..]))
    }

    /// (source port, destination port, first chunk type) of an SCTP packet whose checksum
    /// holds.
    fn parse_sctp(p: &[u8]) -> Option<(u16, u16, u8)> {
        if p.len() < 16 {
            return None;
        }
        let mut zeroed = p.to_vec();
        zeroed[8..12].copy_from_slice(&[0; 4]);
        if crc32c(&zeroed).to_le_bytes() != p[8..12] {
            return None;
        }
        Some((
            u16::from_be_bytes([p[0], p[1]]),
            u16::from_be_bytes([p[2], p[3]]),
            p[12],
        ))
    }

    fn raw(protocol: i32) -> std::io::Result<Socket> {
        let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(protocol)))?;
        s.set_read_timeout(Some(Duration::from_millis(50)))?;
        Ok(s)
    }

    fn recv(mut s: &Socket) -> Option<Vec<u8>> {
        use std::io::Read;
        let mut buf = [0u8; 2048];
        let n = s.read(&mut buf).ok()?;
        Some(buf[..n].to_vec())
    }

    /// What an SCTP INIT from a pod got.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum Outcome {
        /// An INIT ACK from this address and port.
        Answer(Ipv4Addr, u16),
        /// ICMP destination unreachable, port unreachable (type 3, code 3), from this
        /// address, about our packet.
        Refused(Ipv4Addr),
        /// Nothing within the timeout, or an error.
        Failed(String),
    }

    /// One INIT from `netns` (source port `sport`) to `dst:dport`, in a thread of its own.
    pub fn probe(netns: &Path, dst: Ipv4Addr, dport: u16, sport: u16) -> Outcome {
        let netns = netns.to_owned();
        std::thread::spawn(move || probe_here(&netns, dst, dport, sport))
            .join()
            .expect("sctp probe thread")
    }

    fn probe_here(netns: &Path, dst: Ipv4Addr, dport: u16, sport: u16) -> Outcome {
        if let Err(e) = enter(netns) {
            return Outcome::Failed(format!("setns: {e}"));
        }
        let (sctp, icmp) = match (raw(132), raw(1)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return Outcome::Failed(format!("raw socket: {e}")),
        };
        let to = SockAddr::from(SocketAddrV4::new(dst, 0));
        if let Err(e) = sctp.send_to(&packet(sport, dport, 0, INIT), &to) {
            return Outcome::Failed(format!("send: {e}"));
        }
        let deadline = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < deadline {
            if let Some(b) = recv(&sctp)
                && let Some((src, _, 132, p)) = parse_ip(&b)
                && let Some((sp, dp, INIT_ACK)) = parse_sctp(p)
                && dp == sport
            {
                return Outcome::Answer(src, sp);
            }
            if let Some(b) = recv(&icmp)
                && let Some((src, _, 1, p)) = parse_ip(&b)
                && p.len() >= 8 + 20 + 4
                && p[0] == 3
                && p[1] == 3
                && let Some((_, odst, 132, ol4)) = parse_ip(&p[8..])
                && odst == dst
                && ol4[..4] == [sport.to_be_bytes(), dport.to_be_bytes()].concat()[..]
            {
                return Outcome::Refused(src);
            }
        }
        Outcome::Failed("no answer".into())
    }

    /// An SCTP peer in a pod: answers every INIT with an INIT ACK, and records the INITs'
    /// (source port, destination port).
    pub struct Responder {
        stop: Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<Vec<(u16, u16)>>>,
    }

    impl Responder {
        pub fn start(netns: PathBuf) -> Responder {
            let stop = Arc::new(AtomicBool::new(false));
            let flag = stop.clone();
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let thread = std::thread::spawn(move || {
                enter(&netns).expect("setns");
                let s = raw(132).expect("raw SCTP socket");
                ready_tx.send(()).expect("ready");
                let mut seen = vec![];
                while !flag.load(Ordering::Relaxed) {
                    let Some(b) = recv(&s) else { continue };
                    let Some((src, _, 132, p)) = parse_ip(&b) else {
                        continue;
                    };
                    let Some((sp, dp, INIT)) = parse_sctp(p) else {
                        continue;
                    };
                    seen.push((sp, dp));
                    let to = SockAddr::from(SocketAddrV4::new(src, 0));
                    let _ = s.send_to(&packet(dp, sp, 0x1234, INIT_ACK), &to);
                }
                seen
            });
            ready_rx.recv().expect("responder ready");
            Responder {
                stop,
                thread: Some(thread),
            }
        }

        /// Stops it; the INITs it saw.
        pub fn stop(mut self) -> Vec<(u16, u16)> {
            self.stop.store(true, Ordering::Relaxed);
            self.thread
                .take()
                .expect("running")
                .join()
                .expect("responder thread")
        }
    }

    #[test]
    fn packets_carry_a_crc32c_the_parser_checks() {
        // RFC 3720 B.4: 32 bytes of zeros.
        assert_eq!(crc32c(&[0; 32]), 0x8a91_36aa);
        let p = packet(40000, 9000, 0, INIT);
        assert_eq!(parse_sctp(&p), Some((40000, 9000, INIT)));
        let mut bad = p.clone();
        bad[20] ^= 1;
        assert_eq!(parse_sctp(&bad), None);
    }
}

/// SCTP: the userspace datapath's conntrack does not track SCTP ports (docs/operations.md,
/// "SCTP"), so the Service's SCTP port is refused (ICMP port unreachable from the cluster
/// IP, its endpoint never sees the INIT) while its TCP port is balanced as ever; SCTP
/// between pods passes the switch both ways; a NetworkPolicy judges the first SCTP packet
/// between two pods by its port, and after an answered association no longer.
#[test]
fn sctp_service_ports_are_refused_pods_exchange_sctp_and_policy_judges_the_first_association() {
    switchyard_tests::skip_unless_root!();
    let mut s = Services::start(vec![service(
        "sig",
        "10.96.0.50",
        json!([{"name": "http", "port": 80}, {"name": "sig", "port": 9000, "protocol": "SCTP"}]),
        json!({}),
    )]);
    let doc = slice(
        "sig-a",
        "sig",
        json!([{"name": "http", "port": 8080}, {"name": "sig", "port": 9000, "protocol": "SCTP"}]),
        vec![s.endpoint("web-1", json!({}))],
    );
    s.cluster.apply_document(doc).expect("apply");
    let vip: Ipv4Addr = "10.96.0.50".parse().unwrap();
    s.expect_answers("cl1", vip, Proto::Tcp, 80, &["web-1:8080"]);
    let web1: Ipv4Addr = s.ip("web-1").parse().unwrap();
    let responder = sctp::Responder::start(s.netns("web-1"));
    let until = |from: &str, dst: Ipv4Addr, sport: u16, want: sctp::Outcome| {
        let deadline = Instant::now() + CONVERGE;
        loop {
            let got = sctp::probe(&s.netns(from), dst, 9000, sport);
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{from} -> {dst}:9000 SCTP: {got:?}, wanted {want:?}\n{}",
                s.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    // Pod to pod, on one node (cl1) and across nodes (cl2): INIT there, INIT ACK back.
    until("cl1", web1, 40000, sctp::Outcome::Answer(web1, 9000));
    until("cl2", web1, 40010, sctp::Outcome::Answer(web1, 9000));
    // The Service's SCTP port: refused by the cluster IP, from both nodes.
    until("cl1", vip, 41000, sctp::Outcome::Refused(vip));
    until("cl2", vip, 41010, sctp::Outcome::Refused(vip));
    let seen = responder.stop();
    assert!(
        seen.contains(&(40000, 9000)) && seen.contains(&(40010, 9000)),
        "{seen:?}"
    );
    assert!(
        !seen.iter().any(|(sp, _)| *sp == 41000 || *sp == 41010),
        "the endpoint saw an INIT sent to the cluster IP: {seen:?}"
    );

    // NetworkPolicy: web-2 admits cl2 on SCTP 9000 only. The first packet between two pods
    // is judged by its port; once an association is answered, the userspace conntrack (no
    // SCTP ports) takes any SCTP between the same two pods as established: port 9001
    // passes too (docs/operations.md, "SCTP": per-port SCTP rules are not enforced beyond
    // the first association).
    let web2: Ipv4Addr = s.ip("web-2").parse().unwrap();
    s.cluster
        .apply_document(
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "web-2-sctp", "namespace": "default"},
            "spec": {"podSelector": {"matchLabels": {"app": "web-2"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "cl2"}}}],
                    "ports": [{"port": 9000, "protocol": "SCTP"}]}]}}),
        )
        .expect("apply");
    // Nothing may answer before the policy is on web-2's switch: an answered association
    // would make the later INITs established. Its default drop and its rule's clause for
    // web-2 first, then the peer (a dropped INIT does no harm; the answered probe waits).
    let want_drop = format!("priority=100,ip,nw_dst={web2} ");
    let want_clause =
        |l: &str| l.contains("sctp") && l.contains(&format!("nw_dst={web2},tp_dst=9000"));
    let on_switch = switchyard_testbed::wait_until(CONVERGE, || {
        s.cluster
            .dump_flows("n2", &["table=IngressRule"])
            .is_ok_and(|t| t.contains(&want_drop) && t.lines().any(want_clause))
    });
    assert!(
        on_switch,
        "the policy never reached n2:\n{}",
        s.diagnostics()
    );
    let responder = sctp::Responder::start(s.netns("web-2"));
    let denied = |from: &str, dport: u16, sport: u16| {
        let deadline = Instant::now() + CONVERGE;
        loop {
            let got = sctp::probe(&s.netns(from), web2, dport, sport);
            if matches!(got, sctp::Outcome::Failed(_)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{from} -> web-2:{dport} SCTP: {got:?}, not dropped by the policy\n{}",
                s.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    denied("cl1", 9000, 42000);
    denied("cl2", 9001, 42010);
    let answered = |from: &str, dport: u16, sport: u16| {
        let want = sctp::Outcome::Answer(web2, dport);
        let deadline = Instant::now() + CONVERGE;
        loop {
            let got = sctp::probe(&s.netns(from), web2, dport, sport);
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{from} -> web-2:{dport} SCTP: {got:?}\n{}",
                s.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    answered("cl2", 9000, 42020);
    answered("cl2", 9001, 42030);
    let seen = responder.stop();
    assert!(
        !seen.iter().any(|(sp, _)| *sp == 42000 || *sp == 42010),
        "a denied INIT reached web-2: {seen:?}"
    );
}
