//! The pipeline skeleton: every table's default flow, the tunnel's classification,
//! conntrack, L2 towards the tunnel and Output. The same on every node; one owner,
//! [`Owner::Pipeline`](super::Owner::Pipeline).

use super::*;
use crate::ids;
use crate::pipeline::*;

/// The tables this feature writes: every table's default flow, and its fixed flows.
pub const TABLES: &[Table] = &Table::ALL;

/// Table defaults and fixed-port classification: the same on every node.
pub fn flows(flows: &mut Vec<Flow>) {
    let c = ids::pipeline_cookie();
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
        // `nat`: packets of connections a Service DNATed (and their replies) are NATed here.
        vec![apply(vec![Action::Ct(Ct {
            zone: CtZone::Value(CT_ZONE),
            table: Some(Table::ConntrackState.id()),
            nat: Some(openflow::action::Nat::default()),
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
        matching([MatchField::mac(Field::EthDst, TUNNEL_PEER_MAC.octets())]),
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
