//! NetworkPolicy audit logging end to end, on real OVS (userspace datapath) through the
//! controller and the real CNI plugin: namespace x, pod a on n1 (the server), pods b and c
//! on n2. Policy x/web (annotated `switchyard.io/audit: "true"`) isolates x/a for ingress
//! and allows TCP 80 from x/b; policy x/quiet (not annotated) isolates x/c the same way.
//!
//! Judged by the controller's log (target `switchyard::audit`), the switch's meter
//! counters (`ovs-ofctl meter-stats`) and the metrics endpoint:
//! - an allowed and a denied TCP connect give exactly one line each, naming the policy,
//!   the rule, the 5-tuple (the client socket's own port) and the verdict;
//! - connections the unannotated policy judges give no line;
//! - a flood of new UDP flows to x/a is cut by the audit meter: at most rate × time + burst
//!   lines, the meter counts drops, and allowed connections still pass.
//!
//! Lines reach the log asynchronously, so they are awaited until a generous deadline (a
//! convergence wait, never a timing assertion).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard::pipeline::Encap;
use switchyard::source::ObjectKey;
use switchyard_demo::{DemoCluster, DemoOptions};
use switchyard_tests::pod_servers::{Listen, PodServers, enter};
use switchyard_tests::{require_root, workspace_binary};

const PODS: [(&str, &str); 3] = [("a", "n1"), ("b", "n2"), ("c", "n2")];

fn cluster_yaml() -> String {
    let mut docs: Vec<Value> = vec![];
    for (i, n) in ["n1", "n2"].iter().enumerate() {
        let cidr = format!("10.244.{}.0/24", i + 1);
        docs.push(
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": n},
            "spec": {"podCIDR": cidr, "podCIDRs": [cidr]}}),
        );
    }
    docs.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}));
    for (p, node) in PODS {
        docs.push(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": p, "namespace": "x", "labels": {"pod": p}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "agnhost"}]}}));
    }
    docs.iter()
        .map(|d| serde_json::to_string(d).expect("json"))
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// A policy isolating `pod` for ingress and allowing TCP 80 from x/b.
fn policy(name: &str, pod: &str, audited: bool) -> Value {
    let mut metadata = json!({"name": name, "namespace": "x"});
    if audited {
        metadata["annotations"] = json!({"switchyard.io/audit": "true"});
    }
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": metadata,
        "spec": {"podSelector": {"matchLabels": {"pod": pod}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}],
                "ports": [{"protocol": "TCP", "port": 80}]}]}})
}

struct Audit {
    cluster: DemoCluster,
    _servers: Vec<PodServers>,
}

impl Audit {
    fn start() -> Audit {
        require_root();
        let mut cluster = DemoCluster::start(DemoOptions {
            cluster_yaml: cluster_yaml(),
            encap: Encap::Geneve,
            controller_bin: workspace_binary("switchyard"),
            cni_bin: workspace_binary("switchyard-cni"),
        })
        .unwrap_or_else(|e| panic!("demo cluster: {e}"));
        cluster.stop_pod_servers();
        let servers = cluster
            .pods
            .values()
            .map(|p| {
                PodServers::start(
                    p.netns.path(),
                    vec![
                        (Listen::Tcp(80), p.key.to_string()),
                        (Listen::Udp(80), p.key.to_string()),
                    ],
                )
            })
            .collect();
        Audit {
            cluster,
            _servers: servers,
        }
    }

    fn pod(&self, name: &str) -> (PathBuf, Ipv4Addr) {
        let p = &self.cluster.pods[&ObjectKey::new("x", name)];
        (p.netns.path(), p.ip)
    }

    /// One TCP connect from pod `from` to pod `to` port 80: the client's local port and
    /// whether the server answered with its name.
    fn connect(&self, from: &str, to: &str) -> (u16, bool) {
        let (netns, _) = self.pod(from);
        let (_, ip) = self.pod(to);
        let expect = format!("x/{to}");
        std::thread::spawn(move || {
            enter(&netns).expect("enter the pod");
            let socket = socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::STREAM,
                Some(socket2::Protocol::TCP),
            )
            .expect("socket");
            socket
                .bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)).into())
                .expect("bind");
            let port = socket
                .local_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .map_or(0, |a| a.port());
            let addr = SocketAddr::from((ip, 80));
            if socket
                .connect_timeout(&addr.into(), Duration::from_millis(1500))
                .is_err()
            {
                return (port, false);
            }
            let mut s: TcpStream = socket.into();
            let _ = s.set_read_timeout(Some(Duration::from_millis(1500)));
            if s.write_all(b"hello\n").is_err() {
                return (port, false);
            }
            let mut line = String::new();
            let ok = BufReader::new(s).read_line(&mut line).is_ok() && line.trim() == expect;
            (port, ok)
        })
        .join()
        .expect("probe thread")
    }

    /// Connects until the verdict is `allowed` (a policy reaches the switches
    /// asynchronously); the client port of the last connect.
    fn connect_until(&self, from: &str, to: &str, allowed: bool) -> u16 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (port, ok) = self.connect(from, to);
            if ok == allowed {
                return port;
            }
            assert!(
                Instant::now() < deadline,
                "x/{from} -> x/{to}:80 still {} after 60 s\n{}",
                if ok { "allowed" } else { "denied" },
                self.cluster.controller_log_tail(30)
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// The audit lines of the controller's log (from `connection ` on).
    fn lines(&self) -> Vec<String> {
        self.cluster
            .controller_log_tail(usize::MAX)
            .lines()
            .filter(|l| l.contains("switchyard::audit"))
            .filter_map(|l| l.split_once("connection ").map(|(_, r)| r.to_owned()))
            .collect()
    }

    /// The audit lines containing `needle`, once at least one is there (or none after a
    /// deadline when `none` is expected).
    fn lines_with(&self, needle: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found: Vec<String> = self
                .lines()
                .into_iter()
                .filter(|l| l.contains(needle))
                .collect();
            if !found.is_empty() || Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn metrics(&self) -> String {
        let url = self.cluster.metrics_url();
        let addr = url
            .trim_start_matches("http://")
            .split('/')
            .next()
            .expect("host:port")
            .to_owned();
        let mut s = TcpStream::connect(&addr).expect("connect to the metrics endpoint");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).expect("read the answer");
        text
    }

    /// The audit meter's band drop count on a node, as the switch reports it.
    fn meter_drops(&self, node: &str) -> u64 {
        let target = self.cluster.nodes[node].ovs.mgmt_target("br-int");
        let out = switchyard_tests::run(
            "ovs-ofctl",
            &["-O", "OpenFlow13", "meter-stats", &target, "meter=2"],
        );
        // "meter:2 flow_count:.. packet_in_count:.. ... 0: packet_count:N byte_count:.."
        out.split("0: packet_count:")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no band counters in meter-stats: {out}"))
    }
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

#[test]
fn audited_connections_are_logged_once_unaudited_ones_never_and_a_flood_is_metered() {
    switchyard_tests::skip_unless_root!();
    let mut t = Audit::start();
    let (_, a) = t.pod("a");
    let (_, b) = t.pod("b");
    let (c_netns, c) = t.pod("c");
    t.cluster
        .apply_document(policy("web", "a", true))
        .expect("apply x/web");
    t.cluster
        .apply_document(policy("quiet", "c", false))
        .expect("apply x/quiet");
    // Wait until both policies are enforced (these connects may log: their lines are
    // told apart by their client ports below).
    t.connect_until("c", "a", false);
    t.connect_until("a", "c", false);
    t.connect_until("b", "a", true);
    t.connect_until("b", "c", true);

    // An allowed connection: one line naming x/web's ingress rule 0 and its 5-tuple.
    let (port, ok) = t.connect("b", "a");
    assert!(ok, "x/b -> x/a:80 is allowed");
    let tuple = format!("proto=TCP src={b}:{port} dst={a}:80");
    let allow = t.lines_with(&tuple);
    assert_eq!(
        allow,
        vec![format!(
            "node=n1 verdict=allow policy=x/web direction=ingress rule=0 {tuple}"
        )],
        "exactly one line for the allowed connection"
    );
    // A denied one: one line (its SYN retransmissions are the same connection).
    let (port, ok) = t.connect("c", "a");
    assert!(!ok, "x/c -> x/a:80 is denied");
    let tuple = format!("proto=TCP src={c}:{port} dst={a}:80");
    let deny = t.lines_with(&tuple);
    assert_eq!(
        deny,
        vec![format!(
            "node=n1 verdict=default-deny policy=x/web direction=ingress rule=- {tuple}"
        )],
        "exactly one line for the denied connection"
    );
    // The unannotated policy: its allowed and denied connections log nothing.
    assert!(t.connect("b", "c").1);
    assert!(!t.connect("a", "c").1);
    std::thread::sleep(Duration::from_secs(2));
    let about_c: Vec<String> = t
        .lines()
        .into_iter()
        .filter(|l| l.contains(&format!("dst={c}:")))
        .collect();
    assert!(about_c.is_empty(), "x/quiet is not audited: {about_c:?}");

    // A flood: new UDP flows (one socket, 3000 destination ports) from x/c to x/a, all
    // denied, all new connections.
    let drops_before = t.meter_drops("n1");
    let flood_port = {
        let (tx, rx) = std::sync::mpsc::channel();
        let started = Instant::now();
        let sender = std::thread::spawn(move || {
            enter(&c_netns).expect("enter x/c");
            let s = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)).expect("bind");
            tx.send(s.local_addr().expect("local address").port())
                .expect("send the port");
            for dport in 2000..5000u16 {
                let _ = s.send_to(b"flood", SocketAddrV4::new(a, dport));
            }
        });
        let port = rx.recv().expect("flood port");
        sender.join().expect("flood thread");
        // Allowed traffic still passes right after it.
        assert!(
            t.connect("b", "a").1,
            "x/b -> x/a:80 passes after the flood"
        );
        std::thread::sleep(Duration::from_secs(2));
        (port, started)
    };
    let (port, started) = flood_port;
    let flooded: Vec<String> = t
        .lines()
        .into_iter()
        .filter(|l| l.contains(&format!("proto=UDP src={c}:{port} ")))
        .collect();
    let elapsed = started.elapsed().as_secs_f64();
    let (rate, burst) = (
        f64::from(switchyard::audit::DEFAULT_RATE),
        f64::from(switchyard::audit::DEFAULT_BURST),
    );
    let bound = rate * elapsed + burst;
    eprintln!(
        "flood: 3000 new UDP flows, {} lines in {elapsed:.2} s (bound {bound:.0})",
        flooded.len()
    );
    assert!(!flooded.is_empty(), "the flood's first flows are logged");
    assert!(
        flooded.len() as f64 <= bound,
        "{} lines for the flood, more than rate x time + burst = {bound:.0}",
        flooded.len()
    );
    assert!(
        flooded
            .iter()
            .all(|l| l.starts_with("node=n1 verdict=default-deny policy=x/web direction=ingress")),
        "{:?}",
        &flooded[..3.min(flooded.len())]
    );
    let drops = t.meter_drops("n1");
    eprintln!("flood: the audit meter's drops {drops_before} -> {drops}");
    assert!(
        drops > drops_before,
        "the audit meter dropped copies: {drops_before} -> {drops}"
    );

    // The metrics: lines by verdict, and the meter's drops once the controller read them.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = t.metrics();
        let allow = metric(&m, "switchyard_policy_audit_lines_total{verdict=\"allow\"}");
        let deny = metric(
            &m,
            "switchyard_policy_audit_lines_total{verdict=\"default-deny\"}",
        );
        let dropped = metric(
            &m,
            "switchyard_policy_audit_meter_dropped_packets{node=\"n1\"}",
        );
        if allow >= Some(1.0)
            && deny >= Some(1.0 + flooded.len() as f64)
            && dropped.is_some_and(|d| d >= drops as f64)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "audit metrics: allow {allow:?} default-deny {deny:?} meter dropped {dropped:?} (switch: {drops})"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
