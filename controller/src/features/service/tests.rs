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
    assert_eq!(lines.len(), 1 + 4 + 1, "{lines:#?}");
    assert!(lines[0].contains(&lb(http)), "{}", lines[0]);
    assert!(
        lines[0].contains("ct_state=+new+trk,tcp,nw_dst=10.96.0.10,tp_dst=80")
            && lines[0].ends_with(&format!("actions=set_field:{http:#x}->reg5,group:{http}")),
        "{}",
        lines[0]
    );
    let dnat: Vec<&String> = lines.iter().filter(|l| l.contains("table=41")).collect();
    assert_eq!(dnat.len(), 4);
    assert!(
        dnat.iter().any(|l| l.contains("priority=200")
            && l.contains("reg3=0xaf40105,reg4=0x1f90")
            && l.contains("ct(commit,table=50,zone=65520,nat(dst=10.244.1.5:8080),exec(set_field:0x1->ct_mark))")),
        "{dnat:#?}"
    );
    assert!(
        dnat.iter().any(|l| l.contains("priority=210")
            && l.contains("nw_src=10.244.1.5")
            && l.contains("exec(set_field:0x3->ct_mark)")),
        "{dnat:#?}"
    );
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
        g.contains("bucket=weight:100,actions=set_field:0xaf40105->reg3,set_field:0x1f90->reg4,resubmit(,41)"),
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
    base_flows(&mut base);
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
        "learn(table=42,idle_timeout=30,priority=200,delete_learned,cookie={:#x},eth_type=0x800,nw_proto=6,NXM_OF_IP_SRC[],NXM_OF_IP_DST[],NXM_OF_TCP_DST[],load:NXM_NX_REG3[]->NXM_NX_REG3[],load:NXM_NX_REG4[]->NXM_NX_REG4[])",
        ids::service_affinity_cookie(id)
    );
    let endpoints: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("table=41") && !l.contains("priority=190"))
        .collect();
    assert_eq!(endpoints.len(), 4);
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
    assert_eq!(groups.len(), 3);
    let mut seen = std::collections::BTreeSet::new();
    for (k, g) in groups.iter().enumerate() {
        assert_eq!(g.group_id, id | ((k as u32 + 1) << 24));
        assert!(
            g.buckets.len() == 667 || g.buckets.len() == 666,
            "{}",
            g.buckets.len()
        );
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
        // NXAST_MULTIPATH (our formatter shows it raw): symmetric_l3l4+udp, basis = the
        // port id's low 16 bits, modulo_n, max_link 2, reg7[0..15].
        lb.contains(&format!(
            "experimenter(0x00002320,00.0a.00.03.{:02x}.{:02x}.00.00.00.00.00.02.00.00.00.00.00.00.00.0f.00.01.0e.04)",
            (id >> 8) & 0xff,
            id & 0xff
        )) && lb.ends_with("goto_table:41"),
        "{lb}"
    );
    for k in 0..3u32 {
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
