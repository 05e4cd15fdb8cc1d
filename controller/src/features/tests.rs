use std::collections::HashMap;
use std::sync::Arc;

use super::apply as apply_actions;
use super::*;
use crate::ids;
use crate::pipeline::{REG_OUT_PORT, TUNNEL_OFPORT};
use crate::state::NetworkState;
use crate::state::testing::{apply as delta, node, pod};

/// A state with two nodes and pods a, b on n1 (attached, ofports 7 and 8) and c on n2.
fn state() -> (NetworkState, HashMap<String, u32>) {
    let mut s = NetworkState::new();
    s.apply(vec![
        delta(node("n1", "10.244.1.0/24", "192.168.77.11")),
        delta(node("n2", "10.244.2.0/24", "192.168.77.12")),
        delta(pod("default", "a", "n1", &[])),
        delta(pod("default", "b", "n1", &[])),
        delta(pod("default", "c", "n2", &[])),
    ]);
    for (name, iface) in [("a", "va"), ("b", "vb"), ("c", "vc")] {
        let (r, _) = s.attach(&ObjectKey::new("default", name), iface, "c1");
        r.unwrap();
    }
    let ofports = HashMap::from([("va".to_string(), 7), ("vb".to_string(), 8)]);
    (s, ofports)
}

fn ctx<'a>(
    snap: &'a crate::state::Snapshot,
    node: &'a str,
    ofports: &'a HashMap<String, u32>,
) -> NodeContext<'a> {
    NodeContext {
        node: snap.node(node).unwrap(),
        state: snap,
        ofports,
    }
}

#[test]
fn same_inputs_give_identical_flows_and_every_table_has_a_default() {
    let (s, ofports) = state();
    let snap = s.snapshot();
    let c = ctx(&snap, "n1", &ofports);
    let flows = node_flows(&c);
    assert_eq!(flows, node_flows(&c));
    for table in Table::ALL {
        assert!(
            flows
                .iter()
                .any(|f| f.table == table && f.priority == PRIORITY_DEFAULT && f.match_.is_empty()),
            "table {table:?} has no default flow"
        );
    }
    // No duplicate (table, priority, match): the switch would keep only one.
    let mut keys: Vec<_> = flows
        .iter()
        .map(|f| (f.table, f.priority, format!("{:?}", f.match_)))
        .collect();
    let n = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), n);
    // Owners cover the node exactly: skeleton, gateway, two pods, one remote node, policy
    // base (no policy selects anything), Service base (no Services).
    assert_eq!(node_owners(&c).len(), 7);
}

#[test]
fn a_pod_owns_exactly_its_seven_flows_and_they_name_its_port_mac_and_ip() {
    let (s, ofports) = state();
    let snap = s.snapshot();
    let c = ctx(&snap, "n1", &ofports);
    let a = ObjectKey::new("default", "a");
    let mine = owner_flows(&Owner::Pod(Arc::new(a.clone())), &c);
    assert_eq!(mine.len(), 7);
    let ip = Ipv4Addr::new(10, 244, 1, 2);
    assert!(mine.iter().all(|f| f.cookie == ids::pod_cookie(ip)));
    let tables: Vec<Table> = mine.iter().map(|f| f.table).collect();
    assert_eq!(
        tables,
        vec![
            Table::Classifier,
            Table::SpoofGuard,
            Table::SpoofGuard,
            Table::ArpResponder,
            Table::L3Forwarding,
            Table::L2ForwardingCalc,
            Table::ConntrackCommit
        ]
    );
    let l2 = &mine[5];
    assert_eq!(
        l2.match_.get(Field::EthDst).map(|m| m.value.to_vec()),
        Some(mac_for(ip).octets().to_vec())
    );
    assert_eq!(
        l2.instructions[0],
        apply_actions(vec![set_reg(REG_OUT_PORT, 7)]),
        "L2 sends pod a's MAC to its port"
    );
    // A pod of another node, or one without an ofport yet, has no flows here.
    assert!(owner_flows(&Owner::Pod(Arc::new(ObjectKey::new("default", "c"))), &c).is_empty());
    let no_ports = HashMap::new();
    assert!(owner_flows(&Owner::Pod(Arc::new(a)), &ctx(&snap, "n1", &no_ports)).is_empty());
}

#[test]
fn remote_pod_cidrs_go_to_the_tunnel_with_the_remote_node_as_tun_dst() {
    let (s, ofports) = state();
    let snap = s.snapshot();
    let c = ctx(&snap, "n1", &ofports);
    let remote = owner_flows(&Owner::RemoteNode("n2".into()), &c);
    assert_eq!(remote.len(), 1);
    let f = &remote[0];
    assert_eq!(f.table, Table::L3Forwarding);
    assert_eq!(
        f.cookie,
        ids::remote_node_cookie("10.244.2.0/24".parse().unwrap())
    );
    let dst = f.match_.get(Field::Ipv4Dst).unwrap();
    assert_eq!(dst.value.to_vec(), vec![10, 244, 2, 0]);
    let Instruction::ApplyActions(actions) = &f.instructions[0] else {
        panic!("expected apply_actions, got {:?}", f.instructions);
    };
    assert!(actions.contains(&Action::SetField(MatchField::ipv4(
        Field::TunDst,
        Ipv4Addr::new(192, 168, 77, 12)
    ))));
    assert!(owner_flows(&Owner::RemoteNode("n1".into()), &c).is_empty());
    // The skeleton sends the tunnel MAC to the tunnel port.
    let skeleton = owner_flows(&Owner::Pipeline, &c);
    assert!(skeleton.iter().any(|f| f.table == Table::L2ForwardingCalc
        && f.instructions.first()
            == Some(&apply_actions(vec![set_reg(REG_OUT_PORT, TUNNEL_OFPORT)]))));
}

#[test]
fn every_feature_writes_only_the_tables_it_declares() {
    let (s, ofports) = state();
    let snap = s.snapshot();
    let c = ctx(&snap, "n1", &ofports);
    let declared = |owner: &Owner| match owner {
        Owner::Pipeline => skeleton::TABLES,
        Owner::Gateway => gateway::TABLES,
        Owner::Pod(_) => pod::TABLES,
        Owner::RemoteNode(_) => remote_node::TABLES,
        Owner::PolicyBase | Owner::Policy(_) => policy::TABLES,
        Owner::ServiceBase | Owner::Service(_) => service::TABLES,
    };
    let mut checked = 0;
    for owner in node_owners(&c) {
        for f in owner_flows(&owner, &c) {
            checked += 1;
            assert!(
                declared(&owner).contains(&f.table),
                "{owner:?} writes {:?}, which it does not declare",
                f.table
            );
        }
    }
    // Skeleton 19, gateway 5, two pods × 7, one remote node, policy base 6 (conntrack 4, the
    // node's own two addresses), Service base 10.
    assert_eq!(checked, 55, "every owner's flows were looked at");
}

#[test]
fn shared_remote_node_flows_are_what_the_feature_computes_and_follow_the_node() {
    use crate::agent::SharedFlows;
    use crate::realise::{Parts, Prepared};
    let (mut s, ofports) = state();
    let shared = SharedFlows::default();
    let owner = Owner::RemoteNode("n2".into());
    let expect = |snap: &crate::state::Snapshot| Parts {
        shared: owner_flows(&owner, &ctx(snap, "n1", &ofports))
            .into_iter()
            .map(Prepared::new)
            .collect(),
        ..Parts::default()
    };
    let snap = s.snapshot();
    let first = shared.parts(&owner, &ctx(&snap, "n1", &ofports));
    assert_eq!(first, expect(&snap));
    assert_eq!(first.shared.len(), 1);
    // Another node's agent gets the very same prepared flows.
    let again = shared.parts(&owner, &ctx(&snap, "n1", &ofports));
    assert!(Arc::ptr_eq(&first.shared, &again.shared));
    // A node has no flow for itself.
    let own = shared.parts(&owner, &ctx(&snap, "n2", &ofports));
    assert_eq!(own, Parts::default());
    // n2 moves to another InternalIP: the shared flow follows, nothing stale is served.
    s.apply(vec![delta(node("n2", "10.244.2.0/24", "192.168.77.99"))]);
    let snap = s.snapshot();
    let moved = shared.parts(&owner, &ctx(&snap, "n1", &ofports));
    assert_eq!(moved, expect(&snap));
    assert_ne!(moved, first);
    // n2 is deleted: no flow.
    s.apply(vec![crate::state::testing::delete_node("n2")]);
    let snap = s.snapshot();
    assert_eq!(
        shared.parts(&owner, &ctx(&snap, "n1", &ofports)),
        Parts::default()
    );
}

#[test]
fn the_gateway_answers_arp_for_the_remote_pods_next_hop_from_the_gateway_port_only() {
    use crate::pipeline::{GATEWAY_OFPORT, REMOTE_PODS_NEXT_HOP, TUNNEL_PEER_MAC};
    let (s, ofports) = state();
    let snap = s.snapshot();
    let flows = owner_flows(&Owner::Gateway, &ctx(&snap, "n1", &ofports));
    let mut want = arp_request_for(REMOTE_PODS_NEXT_HOP);
    want.insert(MatchField::u32(Field::InPort, GATEWAY_OFPORT))
        .unwrap();
    let arp: Vec<&Flow> = flows
        .iter()
        .filter(|f| f.table == Table::ArpResponder && f.match_ == want)
        .collect();
    assert_eq!(arp.len(), 1, "{flows:#?}");
    assert_eq!(
        arp[0].instructions,
        vec![apply_actions(arp_reply(
            TUNNEL_PEER_MAC,
            REMOTE_PODS_NEXT_HOP
        ))]
    );
    // The same on every node (it names no node), and one flow whatever the cluster's size.
    let other = owner_flows(&Owner::Gateway, &ctx(&snap, "n2", &ofports));
    assert!(other.iter().any(|f| f.match_ == want));
    assert_eq!(flows.len(), 5);
}
