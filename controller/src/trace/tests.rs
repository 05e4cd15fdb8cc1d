//! The trace on flows computed by the features (the same flows the agents install), and on
//! hand-made flows for the OVS semantics the pipeline does not exercise yet (conjunction
//! priorities, groups, resubmit, table miss).

use std::collections::{BTreeMap, HashMap};

use openflow::{Action, Field, FlowStats, GroupDesc, GroupType, Instruction, Match, MatchField};

use super::*;
use crate::agent::InstalledPod;
use crate::features::{NodeContext, node_flows};
use crate::source::{Delta, Object};
use crate::state::NetworkState;
use crate::state::testing::{apply as delta, node, pod};

const FULL_PATH: [u8; 12] = [0, 10, 20, 30, 31, 40, 50, 60, 70, 80, 90, 100];

fn policy(ns: &str, name: &str, spec: serde_json::Value) -> Delta {
    let np: k8s_openapi::api::networking::v1::NetworkPolicy =
        serde_json::from_value(serde_json::json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}))
        .unwrap();
    Delta::Apply(Object::from(np))
}

/// Nodes n1 (pods a, b: ofports 7, 8) and n2 (pod c: ofport 9), namespace `default`.
fn cluster(extra: Vec<Delta>) -> NetworkState {
    let mut s = NetworkState::new();
    let mut deltas = vec![
        delta(node("n1", "10.244.1.0/24", "192.168.77.11")),
        delta(node("n2", "10.244.2.0/24", "192.168.77.12")),
        delta(pod("default", "a", "n1", &[("app", "a")])),
        delta(pod("default", "b", "n1", &[("app", "b")])),
        delta(pod("default", "c", "n2", &[("app", "c")])),
    ];
    deltas.extend(extra);
    s.apply(deltas);
    for (name, iface) in [("a", "va"), ("b", "vb"), ("c", "vc")] {
        let (r, _) = s.attach(&ObjectKey::new("default", name), iface, "c1");
        r.unwrap();
    }
    s
}

struct Node {
    snap: Snapshot,
    name: &'static str,
    pods: BTreeMap<ObjectKey, InstalledPod>,
    flows: Vec<FlowStats>,
    groups: Vec<GroupDesc>,
}

fn on(s: &NetworkState, name: &'static str) -> Node {
    let snap = s.snapshot();
    let all = [("a", "va", 7), ("b", "vb", 8), ("c", "vc", 9)];
    let mut pods = BTreeMap::new();
    let mut ofports = HashMap::new();
    for (p, iface, ofport) in all {
        let key = ObjectKey::new("default", p);
        if snap.pod(&key).unwrap().node == name {
            ofports.insert(iface.to_owned(), ofport);
            pods.insert(
                key,
                InstalledPod {
                    container_id: "c1".into(),
                    iface: iface.into(),
                    ofport,
                    since: std::time::SystemTime::UNIX_EPOCH,
                },
            );
        }
    }
    let ctx = NodeContext {
        node: snap.node(name).unwrap(),
        state: &snap,
        ofports: &ofports,
    };
    let flows = node_flows(&ctx)
        .into_iter()
        .map(|f| FlowStats {
            table_id: f.table.id(),
            duration_sec: 0,
            duration_nsec: 0,
            priority: f.priority,
            idle_timeout: 0,
            hard_timeout: 0,
            flags: 0,
            cookie: f.cookie,
            packet_count: 0,
            byte_count: 0,
            match_: f.match_,
            instructions: f.instructions,
        })
        .collect();
    let groups = snap
        .services()
        .flat_map(|svc| crate::features::service::groups(svc))
        .collect();
    Node {
        snap,
        name,
        pods,
        flows,
        groups,
    }
}

impl Node {
    fn trace(&self, packet: &str) -> Result<TraceReport, TraceError> {
        trace(
            &TraceInput {
                node: self.name,
                snapshot: &self.snap,
                pods: &self.pods,
                flows: &self.flows,
                groups: &self.groups,
            },
            packet,
        )
    }

    fn ok(&self, packet: &str) -> TraceReport {
        self.trace(packet)
            .unwrap_or_else(|e| panic!("trace {packet}: {e}"))
    }
}

fn path(r: &TraceReport) -> Vec<u8> {
    r.steps.iter().map(|s| s.table).collect()
}

fn drop_reason(r: &TraceReport) -> &str {
    match &r.verdict {
        Verdict::Drop { reason } => reason,
        v => panic!("expected a drop, got {v:?}\n{r:#?}"),
    }
}

#[test]
fn pod_to_pod_on_one_node_crosses_every_table_and_reaches_the_pod() {
    let n1 = on(&cluster(vec![]), "n1");
    let r = n1.ok("from=default/a to=default/b port=80/TCP");
    assert_eq!(path(&r), FULL_PATH);
    assert_eq!(
        r.verdict,
        Verdict::Output {
            port: 8,
            name: "vb".into()
        }
    );
    assert_eq!(
        r.packet,
        "tcp,in_port=7,dl_src=0a:58:0a:f4:01:02,dl_dst=0a:58:0a:f4:01:03,nw_src=10.244.1.2,nw_dst=10.244.1.3,tp_src=49152,tp_dst=80"
    );
    assert!(
        r.explanation.contains("delivered to pod default/b"),
        "{r:#?}"
    );
    assert_eq!(r.steps[0].owner, "pod default/a");
    assert_eq!(r.steps[0].table_name, "Classifier");
    assert!(
        r.steps[0].effects.contains(&"reg0 = 0x1".to_owned()),
        "{:?}",
        r.steps[0]
    );
    assert!(r.steps[3].effects[0].contains("ct(zone=65520, nat, table=ConntrackState)"));
    assert_eq!(r.steps[7].owner, "pod default/b", "L3Forwarding to b");
    assert!(
        r.steps[7]
            .effects
            .contains(&"eth_src = 0a:58:0a:f4:01:01".to_owned())
    );
    assert!(
        r.steps[11]
            .effects
            .iter()
            .any(|e| e.starts_with("output to port 8 (vb)"))
    );
    assert!(r.notes.iter().any(|n| n.contains("new connection only")));
    // The microflow syntax gives the same trace (in_port by pod name, by interface name).
    for p in [
        r.packet.replace("in_port=7", "in_port=default/a"),
        r.packet.replace("in_port=7", "in_port=va"),
    ] {
        let again = n1.ok(&p);
        assert_eq!(again.steps, r.steps, "{p}");
        assert_eq!(again.packet, r.packet);
    }
}

#[test]
fn pod_to_another_nodes_pod_goes_through_the_tunnel_and_arrives_there() {
    let s = cluster(vec![]);
    let (n1, n2) = (on(&s, "n1"), on(&s, "n2"));
    let r = n1.ok("from=default/a to=default/c port=80/TCP");
    assert_eq!(path(&r), FULL_PATH);
    assert_eq!(
        r.verdict,
        Verdict::Tunnel {
            node: "n2".into(),
            remote_ip: "192.168.77.12".parse().unwrap()
        }
    );
    assert_eq!(r.steps[7].owner, "node n2");
    assert!(
        r.explanation.contains("to pod default/c"),
        "{}",
        r.explanation
    );
    // On n2 the same connection comes in from the tunnel.
    let r = n2.ok("from=default/a to=default/c port=80/TCP");
    assert!(r.packet.contains(",in_port=1,"), "{}", r.packet);
    assert!(
        r.packet
            .contains("tun_src=192.168.77.11,tun_dst=192.168.77.12"),
        "{}",
        r.packet
    );
    assert_eq!(path(&r), [0, 30, 31, 40, 50, 60, 70, 80, 90, 100]);
    assert_eq!(
        r.verdict,
        Verdict::Output {
            port: 9,
            name: "vc".into()
        }
    );
}

#[test]
fn spoofed_sources_and_unknown_destinations_are_dropped_with_the_reason() {
    let n1 = on(&cluster(vec![]), "n1");
    let r = n1.ok("in_port=va,ip,dl_src=0a:58:0a:f4:01:02,dl_dst=0a:58:0a:f4:01:01,nw_src=10.244.1.99,nw_dst=10.244.1.3");
    assert_eq!(path(&r), [0, 10]);
    let why = drop_reason(&r);
    assert!(
        why.starts_with("spoofed source: port 7 is pod default/a's (10.244.1.2"),
        "{why}"
    );
    assert!(why.contains("nw_src=10.244.1.99"), "{why}");

    // An address of the node's subnet no pod holds: the pod's stack sends it on-link, and
    // no flow knows that MAC.
    let r = n1.ok("from=default/a to=10.244.1.99 port=80/TCP");
    assert_eq!(path(&r), [0, 10, 20, 30, 31, 40, 50, 60, 70]);
    let why = drop_reason(&r);
    assert!(
        why.starts_with("unknown destination: dl_dst=0a:58:0a:f4:01:63"),
        "{why}"
    );
    assert!(why.contains("held by no pod"), "{why}");

    // Outside the cluster: through the gateway, the node routes it.
    let r = n1.ok("from=default/a to=10.99.0.5 port=443/TCP");
    assert_eq!(path(&r), FULL_PATH);
    assert_eq!(
        r.verdict,
        Verdict::Output {
            port: 2,
            name: "sy-gw0".into()
        }
    );
    assert!(
        r.explanation.contains("outside every node's pod CIDR"),
        "{}",
        r.explanation
    );

    // Not a port of the pipeline.
    let r = n1.ok("in_port=42,ip,nw_dst=10.244.1.3");
    assert_eq!(path(&r), [0]);
    assert!(drop_reason(&r).contains("in_port 42 is no pod's"));
}

#[test]
fn arp_for_the_gateway_is_answered_back_out_of_the_in_port() {
    let n1 = on(&cluster(vec![]), "n1");
    let r = n1.ok("in_port=va,arp,dl_src=0a:58:0a:f4:01:02,dl_dst=ff:ff:ff:ff:ff:ff,arp_op=1,arp_spa=10.244.1.2,arp_sha=0a:58:0a:f4:01:02,arp_tpa=10.244.1.1");
    assert_eq!(path(&r), [0, 10, 20]);
    assert_eq!(
        r.verdict,
        Verdict::Output {
            port: 7,
            name: "va".into()
        }
    );
    assert!(
        r.explanation
            .contains("ARP answered by the switch: the reply for 10.244.1.1 (0a:58:0a:f4:01:01)"),
        "{}",
        r.explanation
    );
    assert_eq!(r.steps[2].owner, "gateway of node n1");
    let r = n1.ok("in_port=va,arp,dl_src=0a:58:0a:f4:01:02,arp_op=1,arp_spa=10.244.1.2,arp_sha=0a:58:0a:f4:01:02,arp_tpa=10.244.1.77");
    assert!(drop_reason(&r).contains("ARP for 10.244.1.77"), "{r:#?}");
}

fn policies() -> Vec<Delta> {
    vec![
        // b admits only a, on TCP 80: a conjunction (two clauses).
        policy(
            "default",
            "b-from-a",
            serde_json::json!({"podSelector": {"matchLabels": {"app": "b"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "a"}}}],
                             "ports": [{"port": 80}]}]}),
        ),
        // c is isolated for ingress, nothing admitted.
        policy(
            "default",
            "deny-c",
            serde_json::json!({"podSelector": {"matchLabels": {"app": "c"}}, "policyTypes": ["Ingress"]}),
        ),
    ]
}

#[test]
fn policy_verdicts_name_the_rule_or_the_isolating_policy() {
    let s = cluster(policies());
    let (n1, n2) = (on(&s, "n1"), on(&s, "n2"));
    let r = n1.ok("from=default/a to=default/b port=80/TCP");
    assert_eq!(path(&r), FULL_PATH);
    assert_eq!(
        r.verdict,
        Verdict::Output {
            port: 8,
            name: "vb".into()
        }
    );
    let ingress = &r.steps[9];
    assert_eq!(ingress.table_name, "IngressRule");
    assert_eq!(ingress.owner, "policy default/b-from-a ingress rule 0");
    assert!(ingress.flow.contains("conj_id="), "{}", ingress.flow);
    assert!(
        ingress.effects[0].contains("clauses:"),
        "{:?}",
        ingress.effects
    );
    assert!(
        r.notes.iter().any(|n| n.contains("ingress default/a → default/b (80/TCP) allowed by policy default/b-from-a ingress rule 0")),
        "{:#?}",
        r.notes
    );

    let r = n1.ok("from=default/a to=default/b port=81/TCP");
    assert_eq!(path(&r), &FULL_PATH[..10]);
    assert_eq!(
        drop_reason(&r),
        "no policy allows default/a → default/b:81/TCP; isolated for ingress by policy default/b-from-a"
    );
    assert_eq!(r.steps[9].owner, "ingress policies of pod default/b");

    // c is denied on its own node (the sender's node lets it through the tunnel).
    let r = n1.ok("from=default/a to=default/c port=80/TCP");
    assert!(matches!(r.verdict, Verdict::Tunnel { .. }));
    let r = n2.ok("from=default/a to=default/c");
    assert_eq!(
        drop_reason(&r),
        "no policy allows default/a → default/c (ICMP); isolated for ingress by policy default/deny-c"
    );
    // The node itself is always admitted.
    let r = n2.ok(
        "in_port=sy-gw0,tcp,dl_dst=0a:58:0a:f4:02:02,nw_src=10.244.2.1,nw_dst=10.244.2.2,tp_dst=80",
    );
    assert_eq!(
        r.verdict,
        Verdict::Output {
            port: 9,
            name: "vc".into()
        }
    );
    assert!(
        r.notes.iter().any(|n| n.contains("the node itself")),
        "{:#?}",
        r.notes
    );
}

#[test]
fn egress_policies_decide_on_the_senders_node() {
    let s = cluster(vec![policy(
        "default",
        "a-to-b",
        serde_json::json!({"podSelector": {"matchLabels": {"app": "a"}}, "policyTypes": ["Egress"],
            "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "b"}}}], "ports": [{"port": 80}]}]}),
    )]);
    let (n1, n2) = (on(&s, "n1"), on(&s, "n2"));
    let r = n1.ok("from=default/a to=default/b port=80/TCP");
    assert_eq!(
        r.verdict,
        Verdict::Output {
            port: 8,
            name: "vb".into()
        }
    );
    assert_eq!(r.steps[6].owner, "policy default/a-to-b egress rule 0");
    assert!(
        r.notes.iter().any(|n| n.starts_with(
            "egress default/a → default/b (80/TCP) allowed by policy default/a-to-b egress rule 0"
        )),
        "{:#?}",
        r.notes
    );
    assert!(
        r.notes
            .iter()
            .any(|n| n == "ingress: default/b is not isolated for ingress by any policy"),
        "{:#?}",
        r.notes
    );
    let r = n1.ok("from=default/a to=default/c port=80/TCP");
    assert_eq!(path(&r), &FULL_PATH[..7]);
    assert_eq!(
        drop_reason(&r),
        "no policy allows default/a → default/c:80/TCP; isolated for egress by policy default/a-to-b"
    );
    assert_eq!(r.steps[6].owner, "egress policies of pod default/a");
    // The receiving node does not judge the sender's egress.
    let r = n2.ok("from=default/a to=default/c port=80/TCP");
    assert_eq!(
        r.verdict,
        Verdict::Output {
            port: 9,
            name: "vc".into()
        }
    );
}

#[test]
fn bad_packets_and_unknown_names_give_errors_that_say_what_is_wrong() {
    let n1 = on(&cluster(vec![]), "n1");
    let e = n1.trace("in_port=nope,ip").unwrap_err();
    assert!(
        e.to_string()
            .contains("in_port=nope: no such port on node n1's br-int"),
        "{e}"
    );
    assert!(e.to_string().contains("va=7"), "{e}");
    let e = n1.trace("ip,nw_dst=10.0.0.1").unwrap_err();
    assert!(e.to_string().contains("no in_port="), "{e}");
    let e = n1.trace("in_port=7,ip,nw_dst=10.0.0.0/8").unwrap_err();
    assert!(e.to_string().contains("has a mask"), "{e}");
    let e = n1.trace("in_port=7,frobnicate=1").unwrap_err();
    assert!(matches!(e, TraceError::Syntax { .. }), "{e}");
    let e = n1.trace("from=default/zz to=default/a").unwrap_err();
    assert_eq!(e, TraceError::UnknownPod(ObjectKey::new("default", "zz")));
    let e = n1
        .trace("from=default/a to=default/b port=80/ICMP")
        .unwrap_err();
    assert!(e.to_string().contains("TCP, UDP or SCTP"), "{e}");
    let e = n1.trace("from=default/a").unwrap_err();
    assert!(e.to_string().contains("both from= and to="), "{e}");
    let mut n = on(&cluster(vec![]), "n1");
    n.name = "n9";
    assert!(
        n.trace("in_port=7")
            .unwrap_err()
            .to_string()
            .contains("known nodes: n1, n2")
    );
    let mut n = on(&cluster(vec![]), "n1");
    n.flows.clear();
    assert_eq!(
        n.trace("in_port=7").unwrap_err(),
        TraceError::NoFlows("n1".into())
    );
}

fn flow(table: u8, priority: u16, m: Vec<MatchField>, instructions: Vec<Instruction>) -> FlowStats {
    let mut match_ = Match::new();
    for f in m {
        match_.insert(f).unwrap();
    }
    FlowStats {
        table_id: table,
        duration_sec: 0,
        duration_nsec: 0,
        priority,
        idle_timeout: 0,
        hard_timeout: 0,
        flags: 0,
        cookie: 0,
        packet_count: 0,
        byte_count: 0,
        match_,
        instructions,
    }
}

fn apply(a: Vec<Action>) -> Instruction {
    Instruction::ApplyActions(a)
}

fn conj(id: u32, clause: u8, n: u8) -> Action {
    Action::Conjunction {
        id,
        clause,
        n_clauses: n,
    }
}

fn ip_src(a: [u8; 4]) -> MatchField {
    MatchField::ipv4(Field::Ipv4Src, a.into())
}

fn ip_dst(a: [u8; 4]) -> MatchField {
    MatchField::ipv4(Field::Ipv4Dst, a.into())
}

fn ipv4() -> MatchField {
    MatchField::u16(Field::EthType, 0x0800)
}

#[test]
fn conjunctions_follow_the_classifier_incomplete_lower_and_higher_priorities() {
    let mut n = on(&cluster(vec![]), "n1");
    n.flows = vec![
        flow(
            0,
            100,
            vec![ipv4(), ip_src([10, 0, 0, 1])],
            vec![apply(vec![conj(5, 1, 2)])],
        ),
        flow(
            0,
            100,
            vec![ipv4(), ip_dst([10, 0, 0, 2])],
            vec![apply(vec![conj(5, 2, 2)])],
        ),
        flow(
            0,
            100,
            vec![MatchField::u32(Field::ConjId, 5)],
            vec![apply(vec![Action::output(3)])],
        ),
        // An ordinary flow below the conjunction loses to it...
        flow(0, 50, vec![ipv4()], vec![apply(vec![Action::output(4)])]),
        // ...one above it wins for its own packets.
        flow(
            0,
            150,
            vec![ipv4(), MatchField::u8(Field::IpProto, 17)],
            vec![],
        ),
    ];
    let out = |r: &TraceReport| match &r.verdict {
        Verdict::Output { port, .. } => Some(*port),
        _ => None,
    };
    let r = n.ok("in_port=7,tcp,nw_src=10.0.0.1,nw_dst=10.0.0.2");
    assert_eq!(out(&r), Some(3), "{r:#?}");
    assert!(r.steps[0].effects[0].starts_with("conjunction 5 complete"));
    // Only clause 1 holds: the conjunction is incomplete, the ordinary flow wins.
    let r = n.ok("in_port=7,tcp,nw_src=10.0.0.1,nw_dst=10.0.0.9");
    assert_eq!(out(&r), Some(4));
    let r = n.ok("in_port=7,udp,nw_src=10.0.0.1,nw_dst=10.0.0.2");
    assert!(matches!(r.verdict, Verdict::Drop { .. }), "{r:#?}");
    // A clause with nothing for it to select: table-miss.
    let r = n.ok("in_port=7,arp");
    assert_eq!(r.steps[0].owner, "none");
    assert!(drop_reason(&r).contains("table-miss"), "{r:#?}");
}

#[test]
fn resubmit_registers_output_reg_and_groups() {
    let mut n = on(&cluster(vec![]), "n1");
    let reg1 = openflow::Subfield::whole(Field::Reg(1));
    n.flows = vec![
        flow(
            0,
            10,
            vec![],
            vec![apply(vec![
                Action::load(openflow::Subfield::range(Field::Reg(1), 0, 15), 8),
                Action::resubmit_table(5),
                Action::Group(77),
            ])],
        ),
        flow(
            5,
            10,
            vec![MatchField::u32(Field::Reg(1), 8)],
            vec![apply(vec![Action::OutputReg {
                src: reg1,
                max_len: 0,
            }])],
        ),
    ];
    n.groups = vec![GroupDesc {
        group_type: GroupType::Select,
        group_id: 77,
        buckets: vec![
            openflow::Bucket::weighted(0, vec![Action::output(4)]),
            openflow::Bucket::weighted(10, vec![Action::output(port::LOCAL)]),
            openflow::Bucket::weighted(10, vec![Action::output(5)]),
        ],
    }];
    let r = n.ok("in_port=7,ip");
    assert_eq!(path(&r), [0, 5]);
    assert_eq!(
        r.verdict,
        Verdict::Output {
            port: 8,
            name: "vb".into()
        }
    );
    assert!(
        r.steps[0].effects.contains(&"reg1[0..15] = 0x8".to_owned()),
        "{:?}",
        r.steps[0]
    );
    assert!(
        r.steps[0].effects.contains(&"group:77 bucket 1".to_owned()),
        "{:?}",
        r.steps[0]
    );
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("the trace assumed dp_hash=0x10 (bucket 1 of group 77)")),
        "{:#?}",
        r.notes
    );
    assert!(
        r.notes.iter().any(|n| n.contains("output 2 times")),
        "{:#?}",
        r.notes
    );
    // Without a group the packet is not output by it.
    n.groups.clear();
    let r = n.ok("in_port=7,ip");
    assert!(
        r.notes
            .iter()
            .any(|n| n.contains("group 77 is not on the switch"))
    );
}

use openflow::port;

fn service(name: &str, ip: &str, ports: serde_json::Value, extra: serde_json::Value) -> Delta {
    let mut doc = serde_json::json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"clusterIP": ip, "ports": ports}});
    if let (Some(spec), serde_json::Value::Object(e)) = (doc["spec"].as_object_mut(), extra) {
        spec.extend(e);
    }
    let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(doc).unwrap();
    Delta::Apply(Object::from(svc))
}

fn slice(name: &str, service: &str, port: u16, ips: &[&str]) -> Delta {
    slice_of(name, service, ("http", "TCP", port), ips)
}

/// An EndpointSlice of `service` with one port (`(name, protocol, number)`).
fn slice_of(name: &str, service: &str, port: (&str, &str, u16), ips: &[&str]) -> Delta {
    let endpoints: Vec<serde_json::Value> = ips
        .iter()
        .map(|ip| serde_json::json!({"addresses": [ip]}))
        .collect();
    let s: k8s_openapi::api::discovery::v1::EndpointSlice =
        serde_json::from_value(serde_json::json!({"apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": "default",
                "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "ports": [{"name": port.0, "port": port.2, "protocol": port.1}],
            "endpoints": endpoints}))
        .unwrap();
    Delta::Apply(Object::from(s))
}

/// `web` (10.96.0.10:80 → 8080 on b and c), `sticky` (ClientIP affinity, on b), `empty`
/// (no endpoint).
fn services(extra: Vec<Delta>) -> NetworkState {
    let http = serde_json::json!([{"name": "http", "port": 80, "protocol": "TCP"}]);
    let mut all = vec![
        service("web", "10.96.0.10", http.clone(), serde_json::json!({})),
        slice("web-1", "web", 8080, &["10.244.1.3", "10.244.2.2"]),
        service(
            "sticky",
            "10.96.0.11",
            http.clone(),
            serde_json::json!({"sessionAffinity": "ClientIP"}),
        ),
        slice("sticky-1", "sticky", 8080, &["10.244.1.3"]),
        service("empty", "10.96.0.12", http, serde_json::json!({})),
    ];
    all.extend(extra);
    cluster(all)
}

const SERVICE_PATH: [u8; 12] = [0, 10, 20, 30, 31, 40, 50, 60, 70, 80, 90, 100];

#[test]
fn a_service_connection_goes_through_the_group_and_is_dnated_to_the_chosen_endpoint() {
    let s = services(vec![]);
    let n1 = on(&s, "n1");
    let r = n1.ok("from=default/a to=service:default/web port=80/TCP");
    assert_eq!(path(&r), SERVICE_PATH, "{r:#?}");
    // The first bucket (b, on this node), and the dp_hash that makes OVS take it.
    assert_eq!(
        r.verdict,
        Verdict::Output {
            port: 8,
            name: "vb".into()
        }
    );
    assert!(
        r.packet.starts_with("dp_hash=0x10,tcp,in_port=7,"),
        "{}",
        r.packet
    );
    assert!(r.packet.contains("nw_dst=10.96.0.10"), "{}", r.packet);
    let svc = r.service.clone().unwrap();
    assert!(
        svc.starts_with(
            "Service default/web port 80/TCP (10.96.0.10:80) → endpoint default/b 10.244.1.3:8080 (bucket 0 of group"
        ),
        "{svc}"
    );
    assert!(r.explanation.starts_with(&svc), "{}", r.explanation);
    assert!(r.explanation.contains("delivered to pod default/b"));
    let lb = &r.steps[5];
    assert_eq!(lb.table_name, "ServiceLb");
    assert_eq!(lb.owner, "service default/web:http/TCP");
    assert!(
        lb.effects.iter().any(|e| e.contains(
            "(select, Service default/web port 80/TCP: 2 endpoint(s)): [0] default/b 10.244.1.3:8080, [1] default/c 10.244.2.2:8080"
        )),
        "{lb:#?}"
    );
    assert!(
        lb.effects
            .iter()
            .any(|e| e.contains("dp_hash over 16 values); with dp_hash=0x10 it takes bucket 0")),
        "{lb:#?}"
    );
    // The bucket DNATs: conntrack commits the connection, translated, and the packet goes
    // on in EgressRule with the endpoint's address and port.
    assert!(
        lb.effects
            .iter()
            .any(|e| e.contains("DNATed to 10.244.1.3:8080")
                && e.contains("nw_dst=10.244.1.3")
                && e.contains("tp_dst=8080")
                && e.contains("ct_mark=0x1")),
        "{lb:#?}"
    );
    // Later tables see the endpoint: L3Forwarding is b's flow.
    assert_eq!(r.steps[7].owner, "pod default/b");

    // The other bucket: given dp_hash=1, c on the other node.
    let r = n1.ok("from=default/a to=service:default/web port=80/TCP dp_hash=0x1");
    assert_eq!(path(&r), SERVICE_PATH);
    assert_eq!(
        r.verdict,
        Verdict::Tunnel {
            node: "n2".into(),
            remote_ip: "192.168.77.12".parse().unwrap()
        }
    );
    assert!(r.packet.starts_with("dp_hash=0x1,"), "{}", r.packet);
    assert!(
        r.explanation.contains("to pod default/c (10.244.2.2)"),
        "{}",
        r.explanation
    );
    // The cluster IP as the destination gives the same trace; the only port is the default.
    let by_ip = n1.ok("from=default/a to=10.96.0.10 port=80/TCP dp_hash=0x1");
    assert_eq!(by_ip.steps, r.steps);
    let no_port = n1.ok("from=default/a to=service:default/web dp_hash=0x1");
    assert_eq!(no_port.steps, r.steps);
}

#[test]
fn a_service_without_endpoints_refuses_and_errors_name_the_service() {
    let n1 = on(&services(vec![]), "n1");
    let r = n1.ok("from=default/a to=service:default/empty port=80/TCP");
    assert_eq!(path(&r), [0, 10, 20, 30, 31, 40]);
    assert_eq!(
        r.verdict,
        Verdict::Refused {
            reason: "refused: Service default/empty port 80/TCP has no usable endpoint".into()
        }
    );
    assert!(r.explanation.contains("TCP RST"), "{}", r.explanation);
    assert!(
        r.notes.iter().any(|n| n.contains("meter 1")),
        "{:?}",
        r.notes
    );

    match n1.trace("from=default/a to=service:default/nope port=80/TCP") {
        Err(TraceError::UnknownService(k)) => assert_eq!(k, ObjectKey::new("default", "nope")),
        other => panic!("{other:?}"),
    }
    let e = n1
        .trace("from=default/a to=service:default/web port=81/TCP")
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "Service default/web: no port 81/TCP (its ports: 80/TCP (http))"
    );
    let e = n1
        .trace("from=default/a to=service:web port=80")
        .unwrap_err();
    assert!(e.to_string().contains("service:NAMESPACE/NAME"), "{e}");
    let e = n1
        .trace("from=default/a to=default/b dp_hash=zz")
        .unwrap_err();
    assert!(e.to_string().contains("dp_hash=zz"), "{e}");
}

#[test]
fn policy_judges_a_service_connection_at_the_endpoint_address_and_port() {
    // b admits TCP 80 only: the Service's port is 80, but the DNATed connection is to 8080.
    let s = services(vec![policy(
        "default",
        "b-80",
        serde_json::json!({"podSelector": {"matchLabels": {"app": "b"}},
            "ingress": [{"ports": [{"port": 80}]}]}),
    )]);
    let n1 = on(&s, "n1");
    let r = n1.ok("from=default/a to=service:default/web port=80/TCP");
    assert_eq!(path(&r), [0, 10, 20, 30, 31, 40, 50, 60, 70, 80]);
    let why = drop_reason(&r);
    assert!(
        why.starts_with(
            "no policy allows default/a → default/b:8080/TCP; isolated for ingress by policy default/b-80 (after Service default/web port 80/TCP"
        ),
        "{why}"
    );
}

#[test]
fn session_affinity_is_looked_up_then_learned_on_the_first_connection() {
    let n1 = on(&services(vec![]), "n1");
    let r = n1.ok("from=default/a to=service:default/sticky port=80/TCP");
    // ServiceLb → SessionAffinity (miss) → EndpointDnat (no learned endpoint: the group) →
    // its bucket → EndpointDnat (the endpoint: learn, DNAT) → the rest.
    assert_eq!(
        path(&r),
        [0, 10, 20, 30, 31, 40, 42, 41, 41, 50, 60, 70, 80, 90, 100]
    );
    assert_eq!(r.steps[6].effects, ["no actions: the resubmit returns"]);
    let learn = r.steps[8]
        .effects
        .iter()
        .find(|e| e.starts_with("learn:"))
        .unwrap_or_else(|| panic!("{:#?}", r.steps[8]));
    assert!(
        learn.contains("table SessionAffinity")
            && learn.contains("idle_timeout 10800s")
            && learn.contains("tcp,reg6=0/0x2,nw_src=10.244.1.2,nw_dst=10.96.0.11,tp_dst=80 →")
            && learn.contains("reg3=0xaf40103, reg4=0x1f90"),
        "{learn}"
    );
    assert_eq!(
        r.verdict,
        Verdict::Output {
            port: 8,
            name: "vb".into()
        }
    );
}

#[test]
fn a_pod_reaching_itself_through_a_service_is_hairpinned() {
    let n1 = on(&services(vec![]), "n1");
    let r = n1.ok("from=default/b to=service:default/web port=80/TCP dp_hash=0x10");
    assert_eq!(
        path(&r),
        [0, 10, 20, 30, 31, 40, 50, 60, 70, 80, 90, 90, 100],
        "{r:#?}"
    );
    // ConntrackCommit: the pod's own hairpin flow (source = destination = the pod) marks
    // the connection 0x2, the hairpin flow SNATs it, Output sends it back.
    assert!(
        r.steps[10]
            .effects
            .iter()
            .any(|e| e.contains("ct_mark=0x3")),
        "{:#?}",
        r.steps[10]
    );
    assert!(
        r.steps[11]
            .effects
            .iter()
            .any(|e| e.contains("SNATed to 169.254.169.252")),
        "{:#?}",
        r.steps[11]
    );
    assert_eq!(
        r.verdict,
        Verdict::Output {
            port: 8,
            name: "vb".into()
        }
    );
}

#[test]
fn ovs_dp_hash_table_spreads_values_by_weight() {
    use super::engine::dp_hash_map;
    let two = dp_hash_map(&[100, 100]).unwrap();
    assert_eq!(two.len(), 16);
    assert_eq!(&two[..4], [0, 1, 0, 1]);
    assert_eq!(dp_hash_map(&[100]).unwrap(), vec![0; 16]);
    assert_eq!(dp_hash_map(&[100; 20]).unwrap().len(), 32);
    // One bucket three times as heavy: 4 and 12 of 16 values.
    let skewed = dp_hash_map(&[100, 300]).unwrap();
    assert_eq!(skewed.iter().filter(|b| **b == 0).count(), 4);
    // 100 buckets: 128 values, the first 28 buckets twice (ovs-vswitchd 3.1's ofproto/trace
    // with dp_hash=100, 127 and 200 took buckets 0, 27 and 72).
    let hundred = dp_hash_map(&[100; 100]).unwrap();
    assert_eq!(hundred.len(), 128);
    assert_eq!(
        [hundred[100], hundred[127], hundred[200 & 127]],
        [0, 27, 72]
    );
    // Up to 256 values; beyond, OVS falls back to its default method (measured: 256 buckets
    // use dp_hash, 257 do not).
    assert_eq!(dp_hash_map(&[100; 256]).unwrap().len(), 256);
    assert_eq!(dp_hash_map(&[100; 257]), None);
    assert_eq!(dp_hash_map(&[0, 0]), None);
}

/// A UDP Service port has one group per endpoint, picked by `multipath` over the 5-tuple:
/// the trace computes the link the switch computes (lib/multipath.c, lib/flow.c), so the
/// source port decides the endpoint, and the report says which group and why.
#[test]
fn a_udp_service_follows_the_multipath_link_the_switch_computes() {
    let dns = serde_json::json!([{"name": "dns", "port": 53, "protocol": "UDP"}]);
    let s = services(vec![
        service("dns", "10.96.0.53", dns, serde_json::json!({})),
        slice_of(
            "dns-1",
            "dns",
            ("dns", "UDP", 5353),
            &["10.244.1.3", "10.244.2.2"],
        ),
    ]);
    let n1 = on(&s, "n1");
    let svc = n1
        .snap
        .service(&ObjectKey::new("default", "dns"))
        .expect("dns");
    let port_id = svc.ports[0].id;
    let mut seen = BTreeMap::new();
    for sport in 40000..40040u16 {
        let r = n1.ok(&format!(
            "from=default/a to=service:default/dns port=53/UDP sport={sport}"
        ));
        assert!(
            r.packet.contains(&format!("udp_src={sport}")),
            "{}",
            r.packet
        );
        // What OVS computes for this packet: the endpoints are dealt to groups in order.
        let tuple = super::ovs_hash::FiveTuple {
            src: "10.244.1.2".parse().unwrap(),
            dst: "10.96.0.53".parse().unwrap(),
            proto: 17,
            src_port: sport,
            dst_port: 53,
        };
        let hash = super::ovs_hash::flow_hash_fields(
            openflow::HashFields::SymmetricL3L4Udp,
            &tuple,
            port_id as u16,
        )
        .unwrap();
        assert_eq!(
            tuple.src,
            n1.snap
                .attachment(&ObjectKey::new("default", "a"))
                .unwrap()
                .ip
        );
        let link = hash % 2;
        let (endpoint, verdict_ok) = if link == 0 {
            (
                "default/b 10.244.1.3:5353",
                matches!(r.verdict, Verdict::Output { port: 8, .. }),
            )
        } else {
            (
                "default/c 10.244.2.2:5353",
                matches!(r.verdict, Verdict::Tunnel { .. }),
            )
        };
        let text = r.service.clone().unwrap();
        assert!(
            verdict_ok,
            "sport {sport}: link {link}, {:?}\n{text}",
            r.verdict
        );
        assert!(
            text.contains(&format!("→ endpoint {endpoint}"))
                && text.contains(&format!(
                    "link {link} of 2, which multipath picks from the packet's hash; its only endpoint"
                )),
            "sport {sport}: {text}"
        );
        let lb = r
            .steps
            .iter()
            .find(|s| s.table_name == "ServiceLb")
            .unwrap();
        assert!(
            lb.effects.iter().any(|e| e.contains(&format!(
                "the symmetric_l3l4+udp hash (basis {}) of the packet is {hash:#010x}; modulo_n over 2 links picks link {link} into reg7[0..15]",
                port_id as u16
            ))),
            "{lb:#?}"
        );
        assert!(
            !r.notes.iter().any(|n| n.contains("multipath")),
            "{:?}",
            r.notes
        );
        *seen.entry(link).or_insert(0) += 1;
    }
    // Both endpoints are reached (link 0 alone would be the old assumption).
    assert_eq!(seen.len(), 2, "{seen:?}");
    let e = n1
        .trace("from=default/a to=default/b sport=4000")
        .unwrap_err();
    assert!(e.to_string().contains("sport= needs port="), "{e}");
    let e = n1
        .trace("from=default/a to=service:default/dns sport=0")
        .unwrap_err();
    assert!(e.to_string().contains("sport=0"), "{e}");
}

/// On the userspace datapath an SCTP Service port with endpoints is refused (it cannot balance
/// SCTP), and the trace says why rather than "no usable endpoint".
#[test]
fn an_sctp_service_port_is_refused_and_the_trace_says_why() {
    let sig = serde_json::json!([{"name": "sig", "port": 9000, "protocol": "SCTP"}]);
    let mut s = services(vec![]);
    s.set_userspace_datapath(true);
    s.apply(vec![
        service("sig", "10.96.0.90", sig, serde_json::json!({})),
        slice_of("sig-1", "sig", ("sig", "SCTP", 9000), &["10.244.1.3"]),
    ]);
    let r = on(&s, "n1").ok("from=default/a to=service:default/sig port=9000/SCTP");
    let Verdict::Refused { reason } = &r.verdict else {
        panic!("{:?}", r.verdict)
    };
    assert_eq!(
        reason,
        "refused: Service default/sig port 9000/SCTP: SCTP ports are refused, not load-balanced: this datapath's conntrack does not track their ports (docs/operations.md, \"SCTP\")"
    );
    assert!(
        r.service.as_deref().is_some_and(|t| t.starts_with(
            "Service default/sig port 9000/SCTP (10.96.0.90:9000): SCTP ports are refused"
        )),
        "{:?}",
        r.service
    );
}
