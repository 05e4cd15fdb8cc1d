//! The Service feature's flows and the state's endpoint choice, as plain values.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};

use super::*;
use crate::source::{Delta, Kind};
use crate::state::testing::{apply as delta, node};
use crate::state::{Change, NetworkState};

fn service(name: &str, ip: &str, ports: Value, extra: Value) -> Service {
    let mut doc = json!({"metadata": {"name": name, "namespace": "default"},
        "spec": {"clusterIP": ip, "ports": ports}});
    merge(&mut doc, extra);
    serde_json::from_value(doc).unwrap()
}

fn slice(name: &str, service: &str, ports: Value, endpoints: Value) -> EndpointSlice {
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default",
        "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4", "ports": ports, "endpoints": endpoints}))
    .unwrap()
}

fn merge(a: &mut Value, b: Value) {
    if let (Value::Object(a), Value::Object(b)) = (a, b) {
        for (k, v) in b {
            match a.get_mut(&k) {
                Some(x @ Value::Object(_)) => merge(x, v),
                _ => {
                    a.insert(k, v);
                }
            }
        }
    }
}

fn ep(ip: &str, conditions: Value) -> Value {
    json!({"addresses": [ip], "conditions": conditions})
}

fn state(objects: Vec<Delta>) -> NetworkState {
    let mut s = NetworkState::new();
    let mut all = vec![delta(node("n1", "10.244.1.0/24", "192.168.77.11"))];
    all.extend(objects);
    s.apply(all);
    s
}

fn key(name: &str) -> ObjectKey {
    ObjectKey::new("default", name)
}

fn text(flows: &[Flow]) -> Vec<String> {
    flows
        .iter()
        .map(|f| {
            let fm = openflow::FlowMod {
                table_id: f.table.id(),
                priority: f.priority,
                cookie: f.cookie,
                match_: f.match_.clone(),
                instructions: f.instructions.clone(),
                ..openflow::FlowMod::default()
            };
            openflow::text::format_flow_mod(&fm)
        })
        .collect()
}

fn web() -> Service {
    service(
        "web",
        "10.96.0.10",
        json!([{"name": "http", "port": 80, "protocol": "TCP"},
               {"name": "dns", "port": 53, "protocol": "UDP"}]),
        json!({}),
    )
}

#[test]
fn slices_join_by_label_with_per_slice_ports_ready_first_and_no_duplicates() {
    let s = state(vec![
        delta(web()),
        // Two slices, different target ports for "http"; one endpoint in both.
        delta(slice(
            "web-a",
            "web",
            json!([{"name": "http", "port": 8080}, {"name": "dns", "port": 5353, "protocol": "UDP"}]),
            json!([
                ep("10.244.1.5", json!({})),
                ep("10.244.1.6", json!({"ready": true}))
            ]),
        )),
        delta(slice(
            "web-b",
            "web",
            json!([{"name": "http", "port": 9090}]),
            json!([
                ep(
                    "10.244.1.7",
                    json!({"ready": false, "serving": true, "terminating": true})
                ),
                ep("10.244.1.8", json!({"ready": true}))
            ]),
        )),
        delta(slice(
            "web-dup",
            "web",
            json!([{"name": "http", "port": 8080}]),
            json!([ep("10.244.1.5", json!({"ready": true}))]),
        )),
        // Another Service's slice, and a slice without the label: not ours.
        delta(slice(
            "other",
            "other",
            json!([{"name": "http", "port": 1}]),
            json!([ep("10.244.1.99", json!({}))]),
        )),
    ]);
    let snap = s.snapshot();
    let svc = snap.service(&key("web")).expect("resolved");
    let http = &svc.ports[0];
    let dns = &svc.ports[1];
    let ip = |s: &str| s.parse::<std::net::Ipv4Addr>().unwrap();
    assert_eq!(
        http.endpoints,
        vec![
            (ip("10.244.1.5"), 8080),
            (ip("10.244.1.6"), 8080),
            (ip("10.244.1.8"), 9090)
        ],
        "the terminating endpoint is not used while ready ones exist; the duplicate once"
    );
    assert_eq!(dns.protocol, Protocol::Udp);
    assert_eq!(
        dns.endpoints,
        vec![(ip("10.244.1.5"), 5353), (ip("10.244.1.6"), 5353)]
    );
    assert_ne!(http.id, dns.id);
}

#[test]
fn serving_terminating_endpoints_are_used_only_when_none_is_ready() {
    let s = state(vec![
        delta(web()),
        delta(slice(
            "web-a",
            "web",
            json!([{"name": "http", "port": 8080}]),
            json!([
                ep(
                    "10.244.1.7",
                    json!({"ready": false, "serving": true, "terminating": true})
                ),
                ep(
                    "10.244.1.9",
                    json!({"ready": false, "serving": false, "terminating": true})
                ),
                ep("10.244.1.10", json!({"ready": false}))
            ]),
        )),
    ]);
    let snap = s.snapshot();
    let http = &snap.service(&key("web")).unwrap().ports[0];
    assert_eq!(http.endpoints, vec![("10.244.1.7".parse().unwrap(), 8080)]);
}

#[test]
fn headless_external_name_and_foreign_proxy_services_are_not_programmed() {
    let s = state(vec![
        delta(service(
            "headless",
            "None",
            json!([{"port": 80}]),
            json!({}),
        )),
        delta(service(
            "ext",
            "",
            json!([{"port": 80}]),
            json!({"spec": {"type": "ExternalName", "externalName": "example.com"}}),
        )),
        delta(service(
            "label-headless",
            "10.96.0.11",
            json!([{"port": 80}]),
            json!({"metadata": {"labels": {"service.kubernetes.io/headless": ""}}}),
        )),
        delta(service(
            "other-proxy",
            "10.96.0.12",
            json!([{"port": 80}]),
            json!({"metadata": {"labels": {"service.kubernetes.io/service-proxy-name": "foo"}}}),
        )),
    ]);
    assert_eq!(s.snapshot().service_count(), 0);
}

#[test]
fn api_defaults_are_applied() {
    let s = state(vec![
        delta(service(
            "web",
            "10.96.0.10",
            json!([{"port": 80}]),
            json!({"spec": {"sessionAffinity": "ClientIP"}}),
        )),
        delta(slice(
            "web-a",
            "web",
            json!([{"port": 8080}]),
            json!([ep("10.244.1.5", json!({}))]),
        )),
    ]);
    let snap = s.snapshot();
    let svc = snap.service(&key("web")).unwrap();
    assert_eq!(
        svc.affinity_timeout,
        Some(crate::model::DEFAULT_AFFINITY_TIMEOUT)
    );
    assert_eq!(svc.ports[0].protocol, Protocol::Tcp);
    assert_eq!(
        svc.ports[0].endpoints,
        vec![("10.244.1.5".parse().unwrap(), 8080)],
        "an EndpointPort without protocol is TCP, without name matches the unnamed port"
    );
}

#[test]
fn invalid_objects_are_reported_and_the_last_good_version_kept() {
    let mut s = state(vec![
        delta(web()),
        delta(slice(
            "web-a",
            "web",
            json!([{"name": "http", "port": 8080}]),
            json!([ep("10.244.1.5", json!({}))]),
        )),
    ]);
    let before = s.snapshot().service(&key("web")).cloned();
    let changes = s.apply(vec![delta(slice(
        "web-a",
        "web",
        json!([{"name": "http", "port": 8080}]),
        json!([ep("not-an-ip", json!({}))]),
    ))]);
    assert!(
        !changes
            .changes
            .iter()
            .any(|c| matches!(c, Change::Service(_)))
    );
    assert_eq!(s.snapshot().service(&key("web")).cloned(), before);
    let problems: Vec<String> = s.problems().map(|p| p.to_string()).collect();
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("EndpointSlice/default/web-a: endpoints[0].addresses[0]")),
        "{problems:?}"
    );
}

#[test]
fn an_endpoint_change_names_only_its_service() {
    let mut s = state(vec![
        delta(web()),
        delta(service(
            "api",
            "10.96.0.20",
            json!([{"port": 443}]),
            json!({}),
        )),
        delta(slice(
            "web-a",
            "web",
            json!([{"name": "http", "port": 8080}]),
            json!([ep("10.244.1.5", json!({}))]),
        )),
    ]);
    let c = s.apply(vec![delta(slice(
        "web-a",
        "web",
        json!([{"name": "http", "port": 8080}]),
        json!([ep("10.244.1.5", json!({})), ep("10.244.1.6", json!({}))]),
    ))]);
    let services: Vec<&Change> = c
        .changes
        .iter()
        .filter(|c| matches!(c, Change::Service(_)))
        .collect();
    assert_eq!(services, vec![&Change::Service(key("web"))]);
    // Deleting the Service forgets it.
    let c = s.apply(vec![Delta::Delete(Kind::Service, key("web"))]);
    assert!(c.changes.contains(&Change::Service(key("web"))));
    assert!(s.snapshot().service(&key("web")).is_none());
}

#[test]
fn flows_and_groups_of_a_service_port() {
    let s = state(vec![
        delta(web()),
        delta(slice(
            "web-a",
            "web",
            json!([{"name": "http", "port": 8080}]),
            json!([ep("10.244.1.5", json!({})), ep("10.244.2.6", json!({}))]),
        )),
    ]);
    let snap = s.snapshot();
    let svc = snap.service(&key("web")).unwrap();
    let http = svc.ports[0].id;
    let dns = svc.ports[1].id;
    let mut out = Vec::new();
    flows(svc, &mut out);
    let lines = text(&out);
    let lb = |id: u32| format!("cookie={:#x}", ids::service_cookie(id));
    // The port's ServiceLb flow and the refusing flow of the port without endpoints; the
    // DNAT is in the group's buckets: no EndpointDnat flow.
    assert_eq!(lines.len(), 1 + 1, "{lines:#?}");
    assert!(lines[0].contains(&lb(http)), "{}", lines[0]);
    assert!(
        lines[0].contains("ct_state=+new+trk,tcp,nw_dst=10.96.0.10,tp_dst=80")
            && lines[0].ends_with(&format!("actions=set_field:{http:#x}->reg5,group:{http}")),
        "{}",
        lines[0]
    );
    assert!(!lines.iter().any(|l| l.contains("table=41")), "{lines:#?}");
    // The port without endpoints sends new connections to the controller, metered.
    let none = lines.iter().find(|l| l.contains(&lb(dns))).unwrap();
    assert!(
        none.contains("udp,nw_dst=10.96.0.10,tp_dst=53")
            && none.ends_with("actions=meter:1,CONTROLLER:65535"),
        "{none}"
    );

    let groups = groups(svc);
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].group_id, http);
    assert_eq!(groups[0].group_type, GroupType::Select);
    let g = openflow::text::format_group_desc(&groups[0]);
    assert!(
        g.contains("bucket=weight:100,actions=ct(commit,table=50,zone=65520,nat(dst=10.244.1.5:8080),exec(set_field:0x1->ct_mark,move:NXM_NX_REG6[0]->NXM_NX_CT_MARK[2]))"),
        "{g}"
    );
    assert_eq!(groups[0].buckets.len(), 2);
}

#[test]
fn the_node_holds_every_service_and_the_hairpin_flows() {
    let s = state(vec![delta(web())]);
    let snap = s.snapshot();
    let ofports = HashMap::new();
    let ctx = NodeContext {
        node: snap.node("n1").unwrap(),
        state: &snap,
        ofports: &ofports,
    };
    let owners = node_owners(&ctx);
    assert!(owners.contains(&Owner::ServiceBase));
    assert!(owners.contains(&Owner::Service(Arc::new(key("web")))));
    let mut base = Vec::new();
    base_flows(snap.node("n1").unwrap(), &mut base);
    let lines = text(&base);
    assert!(
        lines.iter().any(|l| l.contains("table=30")
            && l.contains("ct_state=-trk,ip,nw_dst=169.254.169.252")
            && l.ends_with("actions=ct(table=30,zone=65521,nat)")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("table=90")
            && l.contains("ct(commit,table=100,zone=65521,nat(src=169.254.169.252)")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("table=100") && l.ends_with("actions=IN_PORT")),
        "{lines:#?}"
    );
}

#[test]
fn an_affinity_port_looks_up_learned_endpoints_before_its_group() {
    let s = state(vec![
        delta(service(
            "web",
            "10.96.0.10",
            json!([{"name": "http", "port": 80}]),
            json!({"spec": {"sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 30}}}}),
        )),
        delta(slice(
            "web-a",
            "web",
            json!([{"name": "http", "port": 8080}]),
            json!([ep("10.244.1.5", json!({})), ep("10.244.2.6", json!({}))]),
        )),
    ]);
    let snap = s.snapshot();
    let svc = snap.service(&key("web")).unwrap();
    assert_eq!(svc.affinity_timeout, Some(30));
    let id = svc.ports[0].id;
    let mut out = Vec::new();
    flows(svc, &mut out);
    let lines = text(&out);
    let lb = lines.iter().find(|l| l.contains("table=40")).unwrap();
    assert!(
        lb.ends_with(&format!(
            "actions=set_field:{id:#x}->reg5,resubmit(,42),goto_table:41"
        )),
        "{lb}"
    );
    let miss = lines.iter().find(|l| l.contains("priority=190")).unwrap();
    assert!(
        miss.contains(&format!("tcp,reg5={id:#x}"))
            && miss.ends_with(&format!("actions=group:{id}")),
        "{miss}"
    );
    let learn = format!(
        "learn(table=42,idle_timeout=30,priority=200,delete_learned,cookie={:#x},eth_type=0x800,nw_proto=6,NXM_OF_IP_SRC[],NXM_OF_IP_DST[],NXM_OF_TCP_DST[],NXM_NX_REG6[1],load:NXM_NX_REG3[]->NXM_NX_REG3[],load:NXM_NX_REG4[]->NXM_NX_REG4[])",
        ids::service_affinity_cookie(id)
    );
    let endpoints: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("table=41") && !l.contains("priority=190"))
        .collect();
    assert_eq!(endpoints.len(), 2);
    for l in endpoints {
        assert!(l.contains(&learn), "{l}\n{learn}");
    }
    // Learned flows are the switch's: the realiser does not diff them.
    assert!(crate::pipeline::switch_made(ids::service_affinity_cookie(
        id
    )));
    assert!(!crate::pipeline::switch_made(ids::service_cookie(id)));
}

#[test]
fn a_port_with_more_endpoints_than_a_group_holds_is_spread_over_several_groups() {
    let endpoints: Vec<Value> = (0..2000u32)
        .map(|i| {
            ep(
                &format!("10.{}.{}.{}", 100 + i / 65536, (i / 256) % 256, i % 256),
                json!({}),
            )
        })
        .collect();
    let s = state(vec![
        delta(service(
            "big",
            "10.96.0.60",
            json!([{"name": "http", "port": 80}]),
            json!({}),
        )),
        delta(slice(
            "big-a",
            "big",
            json!([{"name": "http", "port": 8080}]),
            Value::Array(endpoints),
        )),
    ]);
    let snap = s.snapshot();
    let svc = snap.service(&key("big")).unwrap();
    let id = svc.ports[0].id;
    let groups = groups(svc);
    assert_eq!(groups.len(), 4);
    let mut seen = std::collections::BTreeSet::new();
    for (k, g) in groups.iter().enumerate() {
        assert_eq!(g.group_id, id | ((k as u32 + 1) << 24));
        assert!(g.buckets.len() == 500, "{}", g.buckets.len());
        // Each group_mod fits OpenFlow's 16-bit message length.
        let msg = openflow::Message::GroupMod(openflow::GroupMod::add(
            g.group_id,
            GroupType::Select,
            g.buckets.clone(),
        ));
        let mut bytes = bytes::BytesMut::new();
        msg.encode(1, &mut bytes).expect("encodes");
        assert!(bytes.len() < 65536, "{}", bytes.len());
        for b in &g.buckets {
            assert!(
                seen.insert(format!("{:?}", b.actions)),
                "an endpoint in two groups"
            );
        }
    }
    assert_eq!(seen.len(), 2000, "every endpoint in exactly one group");
    let mut out = Vec::new();
    flows(svc, &mut out);
    let lines = text(&out);
    let lb = lines.iter().find(|l| l.contains("table=40")).unwrap();
    assert!(
        // symmetric_l3l4+udp, basis = the port id's low 16 bits, modulo_n, 3 links, reg7[0..15].
        lb.contains(&format!(
            "multipath(symmetric_l3l4+udp,{},modulo_n,4,0,NXM_NX_REG7[0..15])",
            id & 0xffff
        )) && lb.ends_with("goto_table:41"),
        "{lb}"
    );
    for k in 0..4u32 {
        let g = id | ((k + 1) << 24);
        assert!(
            lines
                .iter()
                .any(|l| l.contains("reg7") && l.ends_with(&format!("actions=group:{g}"))),
            "no dispatch to group {g}: {lines:#?}"
        );
    }
}

#[test]
fn service_flows_are_computed_once_for_every_node_and_follow_their_endpoints() {
    use crate::agent::SharedFlows;
    use crate::realise::{Parts, Prepared};
    let mut s = state(vec![
        delta(node("n2", "10.244.2.0/24", "192.168.77.12")),
        delta(web()),
        delta(slice(
            "web-a",
            "web",
            json!([{"name": "http", "port": 8080}]),
            json!([ep("10.244.1.5", json!({}))]),
        )),
    ]);
    let ofports = HashMap::new();
    let shared = SharedFlows::default();
    let owner = Owner::Service(Arc::new(key("web")));
    let at = |snap: &crate::state::Snapshot, node: &str| -> Parts {
        let ctx = NodeContext {
            node: snap.node(node).unwrap(),
            state: snap,
            ofports: &ofports,
        };
        shared.parts(&owner, &ctx)
    };
    let expect = |snap: &crate::state::Snapshot| {
        let svc = snap.service(&key("web")).unwrap();
        let mut f = Vec::new();
        flows(svc, &mut f);
        Parts {
            shared: f.into_iter().map(Prepared::new).collect(),
            groups: groups(svc),
            ..Parts::default()
        }
    };
    let snap = s.snapshot();
    let n1 = at(&snap, "n1");
    let n2 = at(&snap, "n2");
    assert_eq!(n1, expect(&snap));
    assert!(
        Arc::ptr_eq(&n1.shared, &n2.shared),
        "one computation for both nodes"
    );
    // An endpoint joins: the shared flows follow.
    s.apply(vec![delta(slice(
        "web-a",
        "web",
        json!([{"name": "http", "port": 8080}]),
        json!([ep("10.244.1.5", json!({})), ep("10.244.2.6", json!({}))]),
    ))]);
    let snap = s.snapshot();
    let after = at(&snap, "n2");
    assert_eq!(after, expect(&snap));
    assert_eq!(after.groups[0].buckets.len(), 2);
    // The Service is deleted: nothing.
    s.apply(vec![Delta::Delete(Kind::Service, key("web"))]);
    assert_eq!(at(&s.snapshot(), "n1"), Parts::default());
}

fn two_nodes(objects: Vec<Delta>) -> NetworkState {
    let mut s = NetworkState::new();
    let mut all = vec![
        delta(node("n1", "10.244.1.0/24", "192.168.77.11")),
        delta(node("n2", "10.244.2.0/24", "192.168.77.12")),
    ];
    all.extend(objects);
    s.apply(all);
    s
}

/// A NodePort Service with an externalIP and a LoadBalancer ingress IP (and one in Proxy
/// mode), one endpoint on n1 and one on n2; `extra` sets the traffic policies.
fn exposed(extra: Value) -> Vec<Delta> {
    let mut spec = json!({"spec": {"type": "LoadBalancer", "externalIPs": ["203.0.113.7"],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"},
            {"ip": "203.0.113.10", "ipMode": "Proxy"}]}}});
    merge(&mut spec, extra);
    vec![
        delta(service("web", "10.96.0.10", json!([]), spec)),
        delta(slice(
            "web-a",
            "web",
            json!([{"name": "http", "port": 8080}]),
            json!([ep("10.244.1.5", json!({})), ep("10.244.2.5", json!({}))]),
        )),
    ]
}

fn node_parts(s: &NetworkState, node: &str) -> (Vec<String>, Vec<GroupDesc>) {
    let snap = s.snapshot();
    let svc = snap.service(&key("web")).unwrap();
    let n = snap.node(node).unwrap();
    let mut f = Vec::new();
    node_flows(svc, n, &mut f);
    (text(&f), node_groups(svc, n))
}

fn shared_text(s: &NetworkState) -> Vec<String> {
    let snap = s.snapshot();
    let mut f = Vec::new();
    flows(snap.service(&key("web")).unwrap(), &mut f);
    text(&f)
}

#[test]
fn node_ports_external_ips_and_lb_ips_balance_cluster_wide_and_snat_external_traffic() {
    let s = two_nodes(exposed(json!({})));
    let snap = s.snapshot();
    let svc = snap.service(&key("web")).unwrap();
    assert_eq!(
        svc.external_ips,
        vec![Ipv4Addr::new(203, 0, 113, 7), Ipv4Addr::new(203, 0, 113, 9)],
        "the Proxy-mode ingress IP is left alone"
    );
    assert!(!svc.node_dependent());
    let lines = shared_text(&s);
    let id = svc.ports[0].id;
    let lb = |l: &&String, dst: &str, snat: bool| {
        l.contains("table=40")
            && l.contains(dst)
            && l.contains(&format!("group:{id}"))
            && l.contains("set_field:0x1->reg6") == snat
    };
    assert!(
        lines
            .iter()
            .any(|l| lb(&l, "nw_dst=169.254.169.253,tp_dst=30080", true)),
        "the NodePort is balanced and SNATed: {lines:#?}"
    );
    for ip in ["203.0.113.7", "203.0.113.9"] {
        let dst = format!("nw_dst={ip},tp_dst=80");
        assert!(
            lines.iter().any(|l| lb(&l, &dst, true)
                && l.contains("reg0=0x3")
                && l.contains("priority=205")),
            "from the gateway, {ip} is external traffic: SNATed: {lines:#?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| lb(&l, &dst, false) && !l.contains("reg0=") && l.contains("priority=200")),
            "from pods, {ip} is like the cluster IP: {lines:#?}"
        );
    }
    assert!(
        !lines.iter().any(|l| l.contains("203.0.113.10")),
        "{lines:#?}"
    );
    let g = openflow::text::format_group_desc(&groups(svc)[0]);
    assert_eq!(
        g.matches("move:NXM_NX_REG6[0]->NXM_NX_CT_MARK[2]").count(),
        2,
        "every bucket's DNAT copies the SNAT flag into ct_mark: {g}"
    );
    let (node_lines, node_groups) = node_parts(&s, "n1");
    assert!(node_lines.is_empty() && node_groups.is_empty());
}

#[test]
fn external_traffic_policy_local_sends_outside_traffic_to_the_nodes_own_endpoints_unsnated() {
    let s = two_nodes(exposed(json!({"spec": {"externalTrafficPolicy": "Local"}})));
    let snap = s.snapshot();
    let svc = snap.service(&key("web")).unwrap();
    assert!(svc.node_dependent());
    let id = svc.ports[0].id;
    let local_gid = id | 0xFE00_0000;
    let shared = shared_text(&s);
    assert!(
        !shared.iter().any(|l| l.contains("169.254.169.253")
            || (l.contains("203.0.113.7") && l.contains("reg0=0x3"))),
        "external frontends are per node under eTP Local: {shared:#?}"
    );
    assert!(
        shared
            .iter()
            .any(|l| l.contains("nw_dst=10.96.0.10") && l.contains(&format!("group:{id}"))),
        "the cluster IP stays cluster-wide: {shared:#?}"
    );
    let (lines, groups) = node_parts(&s, "n1");
    assert!(
        lines.iter().any(|l| l.contains("priority=200")
            && l.contains("nw_dst=169.254.169.253,tp_dst=30080")
            && l.contains(&format!("group:{local_gid}"))
            && !l.contains("reg6")),
        "{lines:#?}"
    );
    for src in ["10.244.1.1", "192.168.77.11"] {
        assert!(
            lines.iter().any(|l| l.contains("priority=210")
                && l.contains(&format!("nw_src={src}"))
                && l.contains("nw_dst=169.254.169.253")
                && l.contains("set_field:0x1->reg6")
                && l.contains(&format!("group:{id}"))),
            "the node's own traffic ({src}) goes cluster-wide, SNATed: {lines:#?}"
        );
    }
    assert!(
        lines.iter().any(|l| l.contains("priority=205")
            && l.contains("reg0=0x3")
            && l.contains("nw_dst=203.0.113.9")
            && l.contains(&format!("group:{local_gid}"))),
        "{lines:#?}"
    );
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].group_id, local_gid);
    assert_eq!(groups[0].buckets.len(), 1, "only n1's endpoint");

    // A node without a local endpoint drops external traffic.
    let s = two_nodes(vec![
        exposed(json!({"spec": {"externalTrafficPolicy": "Local"}})).remove(0),
        delta(slice(
            "web-a",
            "web",
            json!([{"name": "http", "port": 8080}]),
            json!([ep("10.244.1.5", json!({}))]),
        )),
    ]);
    let (lines, groups) = node_parts(&s, "n2");
    assert!(groups.is_empty());
    assert!(
        lines.iter().any(|l| l.contains("priority=200")
            && l.contains("nw_dst=169.254.169.253,tp_dst=30080")
            && l.ends_with("actions=drop")),
        "{lines:#?}"
    );
}

#[test]
fn internal_traffic_policy_local_keeps_cluster_ip_clients_on_their_node() {
    let s = two_nodes(vec![
        delta(service(
            "web",
            "10.96.0.10",
            json!([{"name": "http", "port": 80}]),
            json!({"spec": {"internalTrafficPolicy": "Local"}}),
        )),
        delta(slice(
            "web-a",
            "web",
            json!([{"name": "http", "port": 8080}]),
            json!([
                ep(
                    "10.244.1.5",
                    json!({"ready": false, "serving": true, "terminating": true})
                ),
                ep("10.244.2.5", json!({}))
            ]),
        )),
    ]);
    let snap = s.snapshot();
    let id = snap.service(&key("web")).unwrap().ports[0].id;
    let shared = shared_text(&s);
    assert!(
        !shared.iter().any(|l| l.contains("table=40")),
        "no shared ServiceLb flow: {shared:#?}"
    );
    // n1's only endpoint is terminating but serving: used locally (the cluster set has a
    // ready one elsewhere); n1's local group DNATs to it.
    let (lines, groups) = node_parts(&s, "n1");
    assert!(
        lines.iter().any(|l| l.contains("nw_dst=10.96.0.10")
            && l.contains(&format!("group:{}", id | 0xFE00_0000))),
        "{lines:#?}"
    );
    assert_eq!(groups.len(), 1);
    assert!(
        openflow::text::format_group_desc(&groups[0]).contains("nat(dst=10.244.1.5:8080)"),
        "{:?}",
        groups[0]
    );
    let (lines, groups) = node_parts(&s, "n2");
    assert_eq!(groups[0].buckets.len(), 1);
    assert!(!lines.iter().any(|l| l.contains("table=41")), "{lines:#?}");
}

#[test]
fn the_node_snats_external_service_traffic_to_its_gateway_and_refuses_unknown_node_ports() {
    let s = two_nodes(Vec::new());
    let snap = s.snapshot();
    let mut base = Vec::new();
    base_flows(snap.node("n2").unwrap(), &mut base);
    let lines = text(&base);
    let has = |want: &[&str]| {
        assert!(
            lines.iter().any(|l| want.iter().all(|w| l.contains(w))),
            "{want:?} in {lines:#?}"
        )
    };
    has(&[
        "table=30",
        "ct_state=-trk,ip,nw_dst=10.244.2.1",
        "ct(table=30,zone=65522,nat)",
    ]);
    has(&[
        "table=90",
        "ct_mark=0x4/0x4",
        "ct(commit,table=100,zone=65522,nat(src=10.244.2.1:61000-65535))",
    ]);
    has(&[
        "table=90",
        "ct_state=+est-rpl+trk,ct_mark=0x4/0x4",
        "ct(table=100,zone=65522,nat)",
    ]);
    has(&[
        "table=60",
        "ct_state=+rpl+trk,ct_mark=0x4/0x4",
        "set_field:0a:58:0a:f4:02:01->eth_dst",
    ]);
    has(&[
        "table=40",
        "priority=10",
        "nw_dst=169.254.169.253",
        "CONTROLLER",
    ]);
}

#[test]
fn a_service_without_endpoints_refuses_on_every_frontend() {
    let s = two_nodes(vec![exposed(json!({})).remove(0)]);
    let lines = shared_text(&s);
    for dst in [
        "nw_dst=10.96.0.10",
        "nw_dst=169.254.169.253",
        "nw_dst=203.0.113.7",
        "nw_dst=203.0.113.9",
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(dst) && l.contains("meter:1")),
            "{dst}: {lines:#?}"
        );
    }
}

#[test]
fn local_paths_have_session_affinity_of_their_own() {
    for extra in [
        json!({"spec": {"externalTrafficPolicy": "Local", "sessionAffinity": "ClientIP"}}),
        json!({"spec": {"internalTrafficPolicy": "Local", "sessionAffinity": "ClientIP"}}),
    ] {
        let s = two_nodes(exposed(extra.clone()));
        let snap = s.snapshot();
        let id = snap.service(&key("web")).unwrap().ports[0].id;
        let local_gid = id | 0xFE00_0000;
        let (lines, groups) = node_parts(&s, "n1");
        // The local frontend looks up the learned endpoint first, flagged local.
        let lb: Vec<&String> = lines
            .iter()
            .filter(|l| l.contains("table=40") && l.contains("set_field:0x2->reg6"))
            .collect();
        assert!(!lb.is_empty(), "{extra}: {lines:#?}");
        for l in &lb {
            assert!(
                l.ends_with("resubmit(,42),goto_table:41") && !l.contains("group:"),
                "{l}"
            );
        }
        // A miss goes to the local group, above the cluster-wide miss.
        assert!(
            lines.iter().any(|l| l.contains("table=41")
                && l.contains("priority=195")
                && l.contains("reg6=0x2/0x2")
                && l.ends_with(&format!("actions=group:{local_gid}"))),
            "{extra}: {lines:#?}"
        );
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].group_id, local_gid);
    }
}

#[test]
fn local_endpoints_beyond_one_group_are_spread_over_several_local_groups() {
    let mut s = NetworkState::new();
    let eps: Vec<Value> = (0..1700u32)
        .map(|i| {
            ep(
                &format!("10.244.{}.{}", 16 + i / 250, i % 250 + 1),
                json!({}),
            )
        })
        .chain([ep("10.244.200.5", json!({}))])
        .collect();
    s.apply(vec![
        delta(node("n1", "10.244.16.0/20", "192.168.77.11")),
        delta(node("n2", "10.244.200.0/24", "192.168.77.12")),
        delta(service(
            "web",
            "10.96.0.10",
            json!([{"name": "http", "port": 80, "protocol": "TCP"}]),
            json!({"spec": {"internalTrafficPolicy": "Local"}}),
        )),
        delta(slice(
            "web-a",
            "web",
            json!([{"name": "http", "port": 8080}]),
            Value::Array(eps),
        )),
    ]);
    let snap = s.snapshot();
    let id = snap.service(&key("web")).unwrap().ports[0].id;
    let (lines, groups) = node_parts(&s, "n1");
    // 1700 local endpoints: three groups (multipath picks one) of 567/567/566, ids ID | 0x80.. << 24.
    let ids: Vec<u32> = groups.iter().map(|g| g.group_id).collect();
    assert_eq!(
        ids,
        vec![id | 0x8000_0000, id | 0x8100_0000, id | 0x8200_0000]
    );
    let sizes: Vec<usize> = groups.iter().map(|g| g.buckets.len()).collect();
    assert_eq!(sizes, vec![567, 567, 566]);
    assert!(groups.iter().all(|g| g.buckets.len() <= MAX_BUCKETS));
    let lb = lines
        .iter()
        .find(|l| l.contains("table=40") && l.contains("nw_dst=10.96.0.10"))
        .expect("the local cluster IP flow");
    assert!(
        lb.contains("multipath(symmetric_l3l4+udp,") && lb.contains("goto_table:41"),
        "{lb}"
    );
    for (k, gid) in ids.iter().enumerate() {
        assert!(
            lines.iter().any(|l| l.contains("priority=195")
                && l.contains("reg6=0x2/0x2")
                && (l.contains(&format!("reg7={k:#x} ")) || (k == 0 && l.contains("reg7=0 ")))
                && l.ends_with(&format!("actions=group:{gid}"))),
            "no dispatch to local slot {k}: {lines:#?}"
        );
    }
    // n2's single local endpoint: one group, no multipath.
    let (lines2, groups2) = node_parts(&s, "n2");
    assert_eq!(groups2.len(), 1);
    assert_eq!(groups2[0].group_id, id | 0xFE00_0000);
    assert!(
        !lines2.iter().any(|l| l.contains("multipath(")),
        "{lines2:#?}"
    );
}

#[test]
fn a_udp_port_gets_a_group_per_endpoint_picked_by_a_hash_with_the_ports() {
    let s = state(vec![
        delta(service(
            "dns",
            "10.96.0.53",
            json!([{"name": "dns", "port": 53, "protocol": "UDP"}]),
            json!({}),
        )),
        delta(slice(
            "dns-a",
            "dns",
            json!([{"name": "dns", "port": 5353, "protocol": "UDP"}]),
            json!([
                ep("10.244.1.5", json!({})),
                ep("10.244.1.6", json!({})),
                ep("10.244.2.5", json!({}))
            ]),
        )),
    ]);
    let snap = s.snapshot();
    let svc = snap.service(&key("dns")).unwrap();
    let id = svc.ports[0].id;
    let g = groups(svc);
    let ids: Vec<u32> = g.iter().map(|g| g.group_id).collect();
    assert_eq!(ids, vec![id | 1 << 24, id | 2 << 24, id | 3 << 24]);
    assert!(g.iter().all(|g| g.buckets.len() == 1), "{g:?}");
    let mut f = Vec::new();
    flows(svc, &mut f);
    let lines = text(&f);
    let lb = lines
        .iter()
        .find(|l| l.contains("table=40") && l.contains("nw_dst=10.96.0.53"))
        .expect("the ServiceLb flow");
    // NXAST_MULTIPATH with fields symmetric_l3l4+udp, into reg7.
    assert!(
        lb.contains("multipath(symmetric_l3l4+udp,") && lb.ends_with("goto_table:41"),
        "{lb}"
    );
    for (k, gid) in ids.iter().enumerate() {
        assert!(
            lines.iter().any(|l| l.contains("priority=190")
                && (l.contains(&format!("reg7={k:#x} ")) || (k == 0 && l.contains("reg7=0 ")))
                && l.ends_with(&format!("actions=group:{gid}"))),
            "no dispatch to slot {k}: {lines:#?}"
        );
    }
}

/// SCTP ports cannot be load-balanced by the userspace datapath (its conntrack does not
/// track SCTP ports): they are refused like a port without endpoints, with no group and no
/// endpoint flow, on the cluster and the Local paths; the Service's TCP port is programmed
/// as ever, and the state says why the SCTP port is not (once, until it changes). On the
/// kernel datapath they are balanced as TCP is.
#[test]
fn sctp_ports_are_refused_on_the_userspace_datapath_and_the_state_says_why() {
    let sig = service(
        "web",
        "10.96.0.10",
        json!([{"name": "http", "port": 80, "protocol": "TCP"},
               {"name": "sig", "port": 9000, "protocol": "SCTP", "nodePort": 30900}]),
        json!({"spec": {"type": "NodePort", "externalTrafficPolicy": "Local",
            "internalTrafficPolicy": "Local"}}),
    );
    let objects = || {
        vec![
            delta(node("n1", "10.244.1.0/24", "192.168.77.11")),
            delta(sig.clone()),
            delta(slice(
                "web-a",
                "web",
                json!([{"name": "http", "port": 8080}, {"name": "sig", "port": 9000, "protocol": "SCTP"}]),
                json!([ep("10.244.1.5", json!({})), ep("10.244.1.6", json!({}))]),
            )),
        ]
    };
    // The kernel datapath: balanced, nothing to say.
    let mut kernel = NetworkState::new();
    kernel.apply(objects());
    let snap = kernel.snapshot();
    let svc = snap.service(&key("web")).unwrap();
    assert!(svc.ports.iter().all(|p| !p.datapath_refuses));
    assert_eq!(groups(svc).len(), 2, "a group for each port");
    assert_eq!(kernel.problems().count(), 0);
    let mut s = NetworkState::new();
    s.set_userspace_datapath(true);
    s.apply(objects());
    let snap = s.snapshot();
    let svc = snap.service(&key("web")).unwrap();
    let sctp = svc
        .ports
        .iter()
        .find(|p| p.protocol == Protocol::Sctp)
        .unwrap();
    let http = svc
        .ports
        .iter()
        .find(|p| p.protocol == Protocol::Tcp)
        .unwrap();
    assert_eq!(
        sctp.endpoints.len(),
        2,
        "the endpoints are resolved all the same"
    );
    let lines = shared_text(&s);
    let of = |id: u32| -> Vec<&String> {
        let cookie = format!("cookie={:#x},", ids::service_cookie(id));
        lines.iter().filter(|l| l.starts_with(&cookie)).collect()
    };
    let sctp_flows = of(sctp.id);
    // The cluster IP and the nodePort: refused (packet-in through the reject meter).
    assert_eq!(sctp_flows.len(), 2, "{sctp_flows:#?}");
    assert!(
        sctp_flows.iter().all(|l| l.contains("table=40")
            && l.contains("sctp")
            && l.contains(&format!("meter:{REJECT_METER_ID},"))
            && l.contains("CONTROLLER")),
        "{sctp_flows:#?}"
    );
    // The TCP port is balanced: its groups (both policies Local: its flows are per node).
    let group_ids: Vec<u32> = groups(svc).iter().map(|g| g.group_id & 0xff_ffff).collect();
    assert!(!group_ids.is_empty() && group_ids.iter().all(|id| *id == http.id));
    let (local, local_groups) = node_parts(&s, "n1");
    let sctp_cookie = format!("cookie={:#x},", ids::service_cookie(sctp.id));
    assert!(
        !local.iter().any(|l| l.starts_with(&sctp_cookie)),
        "{local:#?}"
    );
    assert!(
        local_groups
            .iter()
            .all(|g| g.group_id & 0xff_ffff == http.id)
    );
    assert!(
        local
            .iter()
            .any(|l| l.contains(&format!("{:#x}->reg5", http.id)))
    );
    let problems: Vec<String> = s.problems().map(|p| p.to_string()).collect();
    assert_eq!(
        problems,
        [
            "Service/default/web: spec.ports[1].protocol: port 9000/SCTP (sig) is refused, not load-balanced: the userspace datapath's conntrack does not track SCTP ports, so ct(nat) cannot DNAT to an endpoint's port nor keep associations apart (docs/operations.md, \"SCTP\"); the Service's TCP and UDP ports are programmed"
        ]
    );
    // Without its SCTP port the Service has nothing to say.
    s.apply(vec![delta(web())]);
    assert_eq!(s.problems().count(), 0);
}
