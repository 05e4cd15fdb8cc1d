//! The flow compiler: one node's desired OpenFlow pipeline, from plain values.
//!
//! Owns: which flows br-int of a node must hold, with their cookies. A pure function: no I/O,
//! no clock, no randomness, so the same inputs give the same flows in the same order and an
//! unchanged cluster never rewrites a flow. Does not own: sending them (see `reconcile`),
//! or the meaning of tables/registers/cookies (see `pipeline` and docs/pipeline.md).
//!
//! Every flow is built from typed values whose widths are fixed here (a MAC is six bytes,
//! an IPv4 address four), so building a match cannot fail on user input; the `expect`s below
//! guard this module's own invariants only.

use std::net::Ipv4Addr;

use openflow::action::{Ct, CtZone};
use openflow::{Action, Field, Instruction, Match, MatchField, Subfield, port};

use crate::ipam::mac_for;
use crate::model::NodeModel;
use crate::pipeline::{
    CT_ZONE, CookieCategory, GATEWAY_OFPORT, REG_OUT_PORT, REG_SOURCE_CLASS, SourceClass,
    TUNNEL_OFPORT, TUNNEL_PEER_MAC, Table, cookie,
};
use crate::source::ObjectKey;

/// A flow as the compiler wants it on the switch.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Flow {
    /// Which table.
    pub table: Table,
    /// Priority within the table.
    pub priority: u16,
    /// Who owns it (see `pipeline::cookie`).
    pub cookie: u64,
    /// What it matches.
    pub match_: Match,
    /// What it does; empty means drop.
    pub instructions: Vec<Instruction>,
}

/// A pod attached to this node's br-int.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalPod {
    /// Namespace/name.
    pub key: ObjectKey,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its interface's MAC.
    pub mac: [u8; 6],
    /// Its OpenFlow port on br-int.
    pub ofport: u32,
}

/// Everything the compiler needs for one node.
#[derive(Clone, Debug)]
pub struct NodeInputs<'a> {
    /// The node being compiled.
    pub node: &'a NodeModel,
    /// Its pods that have a port on br-int.
    pub pods: &'a [LocalPod],
    /// Every other node (their pod CIDRs are reached through the tunnel).
    pub remote_nodes: Vec<&'a NodeModel>,
}

/// Priority of specific flows; table defaults use [`PRIORITY_DEFAULT`].
pub const PRIORITY_NORMAL: u16 = 200;
/// Priority of a table's catch-all ARP drop, below the responder's answers.
pub const PRIORITY_ARP_DROP: u16 = 190;
/// Priority of each table's default flow.
pub const PRIORITY_DEFAULT: u16 = 0;

const ETH_TYPE_IPV4: u16 = 0x0800;
const ETH_TYPE_ARP: u16 = 0x0806;
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;

/// The node's whole pipeline, sorted by (table, priority descending, cookie).
pub fn node_flows(inputs: &NodeInputs<'_>) -> Vec<Flow> {
    let mut flows = Vec::new();
    pipeline_skeleton(&mut flows);
    gateway_flows(inputs.node, &mut flows);
    for pod in inputs.pods {
        pod_flows(inputs.node, pod, &mut flows);
    }
    for remote in &inputs.remote_nodes {
        if remote.name != inputs.node.name {
            remote_node_flows(inputs.node, remote, &mut flows);
        }
    }
    flows.sort_by(|a, b| {
        (a.table, std::cmp::Reverse(a.priority), a.cookie).cmp(&(
            b.table,
            std::cmp::Reverse(b.priority),
            b.cookie,
        ))
    });
    flows
}

/// The MAC of a node's gateway port.
pub fn gateway_mac(node: &NodeModel) -> [u8; 6] {
    mac_for(node.gateway_ip())
}

fn matching(fields: impl IntoIterator<Item = MatchField>) -> Match {
    let mut m = Match::new();
    for f in fields {
        m.insert(f)
            .expect("compiler builds fields of the right width");
    }
    m
}

fn goto(table: Table) -> Instruction {
    Instruction::GotoTable(table.id())
}

fn apply(actions: Vec<Action>) -> Instruction {
    Instruction::ApplyActions(actions)
}

fn set_reg(reg: u8, value: u32) -> Action {
    Action::SetField(MatchField::u32(Field::Reg(reg), value))
}

fn set_mac(field: Field, mac: [u8; 6]) -> Action {
    Action::SetField(MatchField::mac(field, mac))
}

fn eth_type(t: u16) -> MatchField {
    MatchField::u16(Field::EthType, t)
}

fn flow(
    table: Table,
    priority: u16,
    cookie: u64,
    match_: Match,
    instructions: Vec<Instruction>,
) -> Flow {
    Flow {
        table,
        priority,
        cookie,
        match_,
        instructions,
    }
}

/// Table defaults and fixed-port classification: the same on every node.
fn pipeline_skeleton(flows: &mut Vec<Flow>) {
    let c = cookie(CookieCategory::Pipeline, "pipeline");
    let any = Match::new;
    let drop = Vec::new;
    // Classifier: traffic from the tunnel is another node's pod, already spoof-checked there.
    flows.push(flow(
        Table::Classifier,
        PRIORITY_NORMAL,
        c,
        matching([MatchField::u32(Field::InPort, TUNNEL_OFPORT)]),
        vec![
            apply(vec![set_reg(REG_SOURCE_CLASS, SourceClass::Tunnel as u32)]),
            goto(Table::Conntrack),
        ],
    ));
    flows.push(flow(Table::Classifier, PRIORITY_DEFAULT, c, any(), drop()));
    flows.push(flow(Table::SpoofGuard, PRIORITY_DEFAULT, c, any(), drop()));
    // ARP that nobody answers is dropped: no flooding, pods only ever learn known addresses.
    flows.push(flow(
        Table::ArpResponder,
        PRIORITY_ARP_DROP,
        c,
        matching([eth_type(ETH_TYPE_ARP)]),
        drop(),
    ));
    flows.push(flow(
        Table::ArpResponder,
        PRIORITY_DEFAULT,
        c,
        any(),
        vec![goto(Table::Conntrack)],
    ));
    flows.push(flow(
        Table::Conntrack,
        PRIORITY_NORMAL,
        c,
        matching([eth_type(ETH_TYPE_IPV4)]),
        vec![apply(vec![Action::Ct(Ct {
            zone: CtZone::Value(CT_ZONE),
            table: Some(Table::ConntrackState.id()),
            ..Ct::default()
        })])],
    ));
    // Only IPv4 and ARP are pod traffic for now; anything else stops here.
    flows.push(flow(Table::Conntrack, PRIORITY_DEFAULT, c, any(), drop()));
    flows.push(flow(
        Table::ConntrackState,
        PRIORITY_NORMAL,
        c,
        matching([
            eth_type(ETH_TYPE_IPV4),
            MatchField::u32_masked(Field::CtState, CT_INV | CT_TRK, CT_INV | CT_TRK),
        ]),
        drop(),
    ));
    for (table, next) in [
        (Table::ConntrackState, Table::ServiceLb),
        (Table::ServiceLb, Table::EgressRule),
        (Table::EndpointDnat, Table::EgressRule),
        (Table::EgressRule, Table::L3Forwarding),
        (Table::L3Forwarding, Table::L2ForwardingCalc),
        (Table::IngressRule, Table::ConntrackCommit),
        (Table::ConntrackCommit, Table::Output),
    ] {
        flows.push(flow(table, PRIORITY_DEFAULT, c, any(), vec![goto(next)]));
    }
    flows.push(flow(
        Table::L2ForwardingCalc,
        PRIORITY_NORMAL,
        c,
        matching([MatchField::mac(Field::EthDst, TUNNEL_PEER_MAC)]),
        vec![
            apply(vec![set_reg(REG_OUT_PORT, TUNNEL_OFPORT)]),
            goto(Table::IngressRule),
        ],
    ));
    flows.push(flow(
        Table::L2ForwardingCalc,
        PRIORITY_DEFAULT,
        c,
        any(),
        drop(),
    ));
    flows.push(flow(
        Table::ConntrackCommit,
        PRIORITY_NORMAL,
        c,
        matching([
            eth_type(ETH_TYPE_IPV4),
            MatchField::u32_masked(Field::CtState, CT_NEW | CT_TRK, CT_NEW | CT_TRK),
        ]),
        vec![
            apply(vec![Action::Ct(Ct {
                commit: true,
                zone: CtZone::Value(CT_ZONE),
                ..Ct::default()
            })]),
            goto(Table::Output),
        ],
    ));
    flows.push(flow(
        Table::Output,
        PRIORITY_DEFAULT,
        c,
        any(),
        vec![apply(vec![Action::OutputReg {
            src: Subfield::whole(Field::Reg(REG_OUT_PORT)),
            max_len: 0,
        }])],
    ));
}

/// ct_state bits (nicira-ext.h / meta-flow.h CS_*).
const CT_NEW: u32 = 0x01;
const CT_INV: u32 = 0x10;
const CT_TRK: u32 = 0x20;

/// The OVS ARP responder: turn the request into a reply from `mac`/`ip` and send it back
/// out of the port it came in on.
fn arp_reply(mac: [u8; 6], ip: Ipv4Addr) -> Vec<Action> {
    vec![
        Action::move_(
            Subfield::whole(Field::EthSrc),
            Subfield::whole(Field::EthDst),
        ),
        set_mac(Field::EthSrc, mac),
        Action::SetField(MatchField::u16(Field::ArpOp, ARP_REPLY)),
        Action::move_(
            Subfield::whole(Field::ArpSha),
            Subfield::whole(Field::ArpTha),
        ),
        set_mac(Field::ArpSha, mac),
        Action::move_(
            Subfield::whole(Field::ArpSpa),
            Subfield::whole(Field::ArpTpa),
        ),
        Action::SetField(MatchField::ipv4(Field::ArpSpa, ip)),
        Action::output(port::IN_PORT),
    ]
}

fn arp_request_for(ip: Ipv4Addr) -> Match {
    matching([
        eth_type(ETH_TYPE_ARP),
        MatchField::u16(Field::ArpOp, ARP_REQUEST),
        MatchField::ipv4(Field::ArpTpa, ip),
    ])
}

fn gateway_flows(node: &NodeModel, flows: &mut Vec<Flow>) {
    let c = cookie(CookieCategory::Gateway, &node.name);
    let gw_ip = node.gateway_ip();
    let gw_mac = gateway_mac(node);
    // The node's own stack is trusted: no spoof guard, straight to ARP.
    flows.push(flow(
        Table::Classifier,
        PRIORITY_NORMAL,
        c,
        matching([MatchField::u32(Field::InPort, GATEWAY_OFPORT)]),
        vec![
            apply(vec![set_reg(REG_SOURCE_CLASS, SourceClass::Gateway as u32)]),
            goto(Table::ArpResponder),
        ],
    ));
    flows.push(flow(
        Table::ArpResponder,
        PRIORITY_NORMAL,
        c,
        arp_request_for(gw_ip),
        vec![apply(arp_reply(gw_mac, gw_ip))],
    ));
    flows.push(flow(
        Table::L3Forwarding,
        PRIORITY_NORMAL,
        c,
        matching([
            eth_type(ETH_TYPE_IPV4),
            MatchField::ipv4(Field::Ipv4Dst, gw_ip),
        ]),
        vec![
            apply(vec![set_mac(Field::EthDst, gw_mac)]),
            goto(Table::L2ForwardingCalc),
        ],
    ));
    flows.push(flow(
        Table::L2ForwardingCalc,
        PRIORITY_NORMAL,
        c,
        matching([MatchField::mac(Field::EthDst, gw_mac)]),
        vec![
            apply(vec![set_reg(REG_OUT_PORT, GATEWAY_OFPORT)]),
            goto(Table::IngressRule),
        ],
    ));
}

fn pod_flows(node: &NodeModel, pod: &LocalPod, flows: &mut Vec<Flow>) {
    let c = cookie(CookieCategory::Pod, &pod.key.to_string());
    let in_port = || MatchField::u32(Field::InPort, pod.ofport);
    flows.push(flow(
        Table::Classifier,
        PRIORITY_NORMAL,
        c,
        matching([in_port()]),
        vec![
            apply(vec![set_reg(REG_SOURCE_CLASS, SourceClass::Pod as u32)]),
            goto(Table::SpoofGuard),
        ],
    ));
    // Spoof guard: the pod's own MAC and IP, for IP and for ARP alike.
    flows.push(flow(
        Table::SpoofGuard,
        PRIORITY_NORMAL,
        c,
        matching([
            in_port(),
            MatchField::mac(Field::EthSrc, pod.mac),
            eth_type(ETH_TYPE_IPV4),
            MatchField::ipv4(Field::Ipv4Src, pod.ip),
        ]),
        vec![goto(Table::ArpResponder)],
    ));
    flows.push(flow(
        Table::SpoofGuard,
        PRIORITY_NORMAL,
        c,
        matching([
            in_port(),
            MatchField::mac(Field::EthSrc, pod.mac),
            eth_type(ETH_TYPE_ARP),
            MatchField::ipv4(Field::ArpSpa, pod.ip),
            MatchField::mac(Field::ArpSha, pod.mac),
        ]),
        vec![goto(Table::ArpResponder)],
    ));
    flows.push(flow(
        Table::ArpResponder,
        PRIORITY_NORMAL,
        c,
        arp_request_for(pod.ip),
        vec![apply(arp_reply(pod.mac, pod.ip))],
    ));
    flows.push(flow(
        Table::L3Forwarding,
        PRIORITY_NORMAL,
        c,
        matching([
            eth_type(ETH_TYPE_IPV4),
            MatchField::ipv4(Field::Ipv4Dst, pod.ip),
        ]),
        vec![
            apply(vec![
                set_mac(Field::EthSrc, gateway_mac(node)),
                set_mac(Field::EthDst, pod.mac),
            ]),
            goto(Table::L2ForwardingCalc),
        ],
    ));
    flows.push(flow(
        Table::L2ForwardingCalc,
        PRIORITY_NORMAL,
        c,
        matching([MatchField::mac(Field::EthDst, pod.mac)]),
        vec![
            apply(vec![set_reg(REG_OUT_PORT, pod.ofport)]),
            goto(Table::IngressRule),
        ],
    ));
}

fn remote_node_flows(node: &NodeModel, remote: &NodeModel, flows: &mut Vec<Flow>) {
    let c = cookie(CookieCategory::RemoteNode, &remote.name);
    let cidr = remote.pod_cidr;
    flows.push(flow(
        Table::L3Forwarding,
        PRIORITY_NORMAL,
        c,
        matching([
            eth_type(ETH_TYPE_IPV4),
            MatchField::ipv4_prefix(Field::Ipv4Dst, cidr.network(), cidr.prefix_len()),
        ]),
        vec![
            apply(vec![
                set_mac(Field::EthSrc, gateway_mac(node)),
                set_mac(Field::EthDst, TUNNEL_PEER_MAC),
                Action::SetField(MatchField::ipv4(Field::TunDst, remote.internal_ip)),
            ]),
            goto(Table::L2ForwardingCalc),
        ],
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cidr: &str, ip: [u8; 4]) -> NodeModel {
        NodeModel {
            name: name.into(),
            pod_cidr: cidr.parse().unwrap(),
            internal_ip: Ipv4Addr::from(ip),
        }
    }

    fn pod(name: &str, ip: [u8; 4], ofport: u32) -> LocalPod {
        let ip = Ipv4Addr::from(ip);
        LocalPod {
            key: ObjectKey::new("default", name),
            ip,
            mac: mac_for(ip),
            ofport,
        }
    }

    fn owned_by(flows: &[Flow], category: CookieCategory, owner: &str) -> Vec<Flow> {
        let c = cookie(category, owner);
        flows.iter().filter(|f| f.cookie == c).cloned().collect()
    }

    #[test]
    fn same_inputs_give_identical_flows_and_every_table_has_a_default() {
        let n1 = node("n1", "10.244.1.0/24", [192, 168, 77, 11]);
        let n2 = node("n2", "10.244.2.0/24", [192, 168, 77, 12]);
        let pods = vec![pod("a", [10, 244, 1, 5], 7)];
        let inputs = NodeInputs {
            node: &n1,
            pods: &pods,
            remote_nodes: vec![&n1, &n2],
        };
        let flows = node_flows(&inputs);
        assert_eq!(flows, node_flows(&inputs));
        for table in Table::ALL {
            assert!(
                flows.iter().any(|f| f.table == table
                    && f.priority == PRIORITY_DEFAULT
                    && f.match_.is_empty()),
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
    }

    #[test]
    fn a_pod_owns_exactly_its_six_flows_and_they_name_its_port_mac_and_ip() {
        let n1 = node("n1", "10.244.1.0/24", [192, 168, 77, 11]);
        let pods = vec![pod("a", [10, 244, 1, 5], 7), pod("b", [10, 244, 1, 6], 8)];
        let flows = node_flows(&NodeInputs {
            node: &n1,
            pods: &pods,
            remote_nodes: vec![],
        });
        let mine = owned_by(&flows, CookieCategory::Pod, "default/a");
        assert_eq!(mine.len(), 6);
        let tables: Vec<Table> = mine.iter().map(|f| f.table).collect();
        assert_eq!(
            tables,
            vec![
                Table::Classifier,
                Table::SpoofGuard,
                Table::SpoofGuard,
                Table::ArpResponder,
                Table::L3Forwarding,
                Table::L2ForwardingCalc
            ]
        );
        let l2 = &mine[5];
        assert_eq!(
            l2.match_.get(Field::EthDst).map(|m| m.value.to_vec()),
            Some(mac_for(Ipv4Addr::new(10, 244, 1, 5)).to_vec())
        );
        assert_eq!(
            l2.instructions[0],
            apply(vec![set_reg(REG_OUT_PORT, 7)]),
            "L2 sends pod a's MAC to its port"
        );
        // Removing pod b removes exactly b's flows.
        let fewer = node_flows(&NodeInputs {
            node: &n1,
            pods: &pods[..1],
            remote_nodes: vec![],
        });
        assert_eq!(fewer.len(), flows.len() - 6);
        assert!(owned_by(&fewer, CookieCategory::Pod, "default/b").is_empty());
    }

    #[test]
    fn remote_pod_cidrs_go_to_the_tunnel_with_the_remote_node_as_tun_dst() {
        let n1 = node("n1", "10.244.1.0/24", [192, 168, 77, 11]);
        let n2 = node("n2", "10.244.2.0/24", [192, 168, 77, 12]);
        let flows = node_flows(&NodeInputs {
            node: &n1,
            pods: &[],
            remote_nodes: vec![&n1, &n2],
        });
        let remote = owned_by(&flows, CookieCategory::RemoteNode, "n2");
        assert_eq!(remote.len(), 1);
        let f = &remote[0];
        assert_eq!(f.table, Table::L3Forwarding);
        let dst = f.match_.get(Field::Ipv4Dst).unwrap();
        assert_eq!(dst.value.to_vec(), vec![10, 244, 2, 0]);
        assert_eq!(
            dst.mask.as_ref().map(|m| m.to_vec()),
            Some(vec![255, 255, 255, 0])
        );
        let Instruction::ApplyActions(actions) = &f.instructions[0] else {
            panic!("expected apply_actions, got {:?}", f.instructions);
        };
        assert!(actions.contains(&Action::SetField(MatchField::ipv4(
            Field::TunDst,
            Ipv4Addr::new(192, 168, 77, 12)
        ))));
        assert!(owned_by(&flows, CookieCategory::RemoteNode, "n1").is_empty());
    }
}
