//! Services (what kube-proxy does): a new connection to a Service port is sent through the
//! port's select group, whose bucket names one endpoint; EndpointDnat then DNATs it there in
//! conntrack (the node's zone) and commits it, so every later packet of the connection,
//! both ways, is NATed by the Conntrack table's `ct(nat)` and never sees a group again.
//! Owners: [`Owner::Service`](super::Owner::Service) (one per Service: all its ports'
//! flows and groups, the same on every node) and
//! [`Owner::ServiceBase`](super::Owner::ServiceBase) (hairpin).
//!
//! Per Service port with endpoints: one ServiceLb flow (new connections to cluster IP,
//! protocol and port → `reg5` = port id, group), one select group (a bucket per endpoint:
//! `reg3` = address, `reg4` = DNAT port, resubmit to EndpointDnat) and two EndpointDnat flows
//! per endpoint (the hairpin variant matches the endpoint as the source too). A port without
//! a usable endpoint gets a ServiceLb flow that sends new connections to the controller
//! through the reject meter; the node agent refuses them (TCP RST / ICMP port unreachable,
//! see `crate::reject`).
//!
//! A changed endpoint set changes the group's buckets (the realiser sends a group_mod
//! MODIFY: the group keeps its id and the ServiceLb flow is untouched) and the EndpointDnat
//! flows of the endpoints that came or went; connections to the remaining endpoints are in
//! conntrack and go on.
//!
//! Hairpin: a pod whose connection to a Service lands on itself would receive packets from
//! its own address, which Linux drops. Such a connection is marked [`CT_MARK_HAIRPIN`] when
//! it is DNATed, SNATed to [`HAIRPIN_SNAT_IP`] in [`CT_ZONE_HAIRPIN`] before output, and
//! output to the port it came in on; its replies (to the SNAT address) are un-SNATed in that
//! zone before the Conntrack table's own `ct(nat)`.

use openflow::action::{Nat, NatKind};
use openflow::{Bucket, GroupDesc, GroupType};

use super::*;
use crate::ids;
use crate::pipeline::*;
use crate::policy::Protocol;
use crate::state::{ResolvedPort, ResolvedService};

/// The tables this feature writes.
pub const TABLES: &[Table] = &[
    Table::Conntrack,
    Table::ServiceLb,
    Table::EndpointDnat,
    Table::ConntrackCommit,
    Table::Output,
];

/// Priority of the hairpin variant of an EndpointDnat flow (above the plain one).
pub const PRIORITY_HAIRPIN: u16 = 210;
/// Priority of the hairpin's established forward packets in ConntrackCommit.
const PRIORITY_HAIRPIN_EST: u16 = 205;

const CT_EST: u32 = 0x02;
const CT_RPL: u32 = 0x08;

fn ip_proto(protocol: Protocol) -> MatchField {
    MatchField::u8(Field::IpProto, protocol.number())
}

fn dst_port(protocol: Protocol, port: u16) -> MatchField {
    let field = match protocol {
        Protocol::Tcp => Field::TcpDst,
        Protocol::Udp => Field::UdpDst,
        Protocol::Sctp => Field::SctpDst,
    };
    MatchField::u16(field, port)
}

fn set_ct_mark(mark: u32) -> Action {
    Action::SetField(MatchField::u32(Field::CtMark, mark))
}

/// The flows of one Service (every port), the same on every node.
pub fn flows(svc: &ResolvedService, flows: &mut Vec<Flow>) {
    for port in &svc.ports {
        port_flows(svc, port, flows);
    }
}

fn port_flows(svc: &ResolvedService, port: &ResolvedPort, flows: &mut Vec<Flow>) {
    let c = ids::service_cookie(port.id);
    let new_to_service = matching([
        eth_type(ETH_TYPE_IPV4),
        MatchField::u32_masked(Field::CtState, CT_NEW | CT_TRK, CT_NEW | CT_TRK),
        ip_proto(port.protocol),
        MatchField::ipv4(Field::Ipv4Dst, svc.cluster_ip),
        dst_port(port.protocol, port.port),
    ]);
    if port.endpoints.is_empty() {
        // Refused, not left to time out: the node agent answers the packet-in with a TCP
        // RST or ICMP port unreachable (`crate::reject`); the meter bounds the rate.
        flows.push(flow(
            Table::ServiceLb,
            PRIORITY_NORMAL,
            c,
            new_to_service,
            vec![
                Instruction::Meter(REJECT_METER_ID),
                apply(vec![Action::output(port::CONTROLLER)]),
            ],
        ));
        return;
    }
    flows.push(flow(
        Table::ServiceLb,
        PRIORITY_NORMAL,
        c,
        new_to_service,
        vec![apply(vec![
            set_reg(REG_SERVICE_PORT, port.id),
            Action::Group(port.id),
        ])],
    ));
    for &(ip, target) in &port.endpoints {
        let dnat = |mark: u32| {
            vec![apply(vec![Action::Ct(Ct {
                commit: true,
                zone: CtZone::Value(CT_ZONE),
                table: Some(Table::EgressRule.id()),
                nat: Some(Nat {
                    kind: Some(NatKind::Dst),
                    addr_min: Some(ip.into()),
                    port_min: Some(target),
                    ..Nat::default()
                }),
                actions: vec![set_ct_mark(mark)],
                ..Ct::default()
            })])]
        };
        let endpoint = [
            eth_type(ETH_TYPE_IPV4),
            ip_proto(port.protocol),
            MatchField::u32(Field::Reg(REG_SERVICE_PORT), port.id),
            MatchField::u32(Field::Reg(REG_ENDPOINT_IP), u32::from(ip)),
            MatchField::u32(Field::Reg(REG_ENDPOINT_PORT), u32::from(target)),
        ];
        flows.push(flow(
            Table::EndpointDnat,
            PRIORITY_NORMAL,
            c,
            matching(endpoint.clone()),
            dnat(CT_MARK_SERVICE),
        ));
        flows.push(flow(
            Table::EndpointDnat,
            PRIORITY_HAIRPIN,
            c,
            matching(
                endpoint
                    .into_iter()
                    .chain([MatchField::ipv4(Field::Ipv4Src, ip)]),
            ),
            dnat(CT_MARK_SERVICE | CT_MARK_HAIRPIN),
        ));
    }
}

/// The select groups of one Service: one per port with endpoints, a bucket per endpoint.
pub fn groups(svc: &ResolvedService) -> Vec<GroupDesc> {
    svc.ports
        .iter()
        .filter(|p| !p.endpoints.is_empty())
        .map(|p| GroupDesc {
            group_type: GroupType::Select,
            group_id: p.id,
            buckets: p
                .endpoints
                .iter()
                .map(|&(ip, target)| {
                    Bucket::weighted(
                        100,
                        vec![
                            set_reg(REG_ENDPOINT_IP, u32::from(ip)),
                            set_reg(REG_ENDPOINT_PORT, u32::from(target)),
                            Action::resubmit_table(Table::EndpointDnat.id()),
                        ],
                    )
                })
                .collect(),
        })
        .collect()
}

/// The fixed flows: hairpin un-SNAT, SNAT and output.
pub fn base_flows(flows: &mut Vec<Flow>) {
    let c = ids::service_base_cookie();
    let hairpin = || MatchField::u32_masked(Field::CtMark, CT_MARK_HAIRPIN, CT_MARK_HAIRPIN);
    // Replies to the hairpin SNAT address: un-SNAT first (its zone), then the Conntrack
    // table again (now tracked, so this flow does not match twice) for the node's zone.
    flows.push(flow(
        Table::Conntrack,
        PRIORITY_HAIRPIN,
        c,
        matching([
            eth_type(ETH_TYPE_IPV4),
            MatchField::u32_masked(Field::CtState, 0, CT_TRK),
            MatchField::ipv4(Field::Ipv4Dst, HAIRPIN_SNAT_IP),
        ]),
        vec![apply(vec![Action::Ct(Ct {
            zone: CtZone::Value(CT_ZONE_HAIRPIN),
            table: Some(Table::Conntrack.id()),
            nat: Some(Nat::default()),
            ..Ct::default()
        })])],
    ));
    flows.push(flow(
        Table::ConntrackCommit,
        PRIORITY_HAIRPIN,
        c,
        matching([
            eth_type(ETH_TYPE_IPV4),
            MatchField::u32_masked(Field::CtState, CT_NEW | CT_TRK, CT_NEW | CT_TRK),
            hairpin(),
        ]),
        vec![apply(vec![Action::Ct(Ct {
            commit: true,
            zone: CtZone::Value(CT_ZONE_HAIRPIN),
            table: Some(Table::Output.id()),
            nat: Some(Nat {
                kind: Some(NatKind::Src),
                addr_min: Some(HAIRPIN_SNAT_IP.into()),
                ..Nat::default()
            }),
            actions: vec![set_ct_mark(CT_MARK_SERVICE | CT_MARK_HAIRPIN)],
            ..Ct::default()
        })])],
    ));
    flows.push(flow(
        Table::ConntrackCommit,
        PRIORITY_HAIRPIN_EST,
        c,
        matching([
            eth_type(ETH_TYPE_IPV4),
            MatchField::u32_masked(Field::CtState, CT_EST | CT_TRK, CT_EST | CT_RPL | CT_TRK),
            hairpin(),
        ]),
        vec![apply(vec![Action::Ct(Ct {
            zone: CtZone::Value(CT_ZONE_HAIRPIN),
            table: Some(Table::Output.id()),
            nat: Some(Nat::default()),
            ..Ct::default()
        })])],
    ));
    // A hairpin packet leaves by the port it came in on (OpenFlow never outputs to in_port
    // unless told so).
    flows.push(flow(
        Table::Output,
        PRIORITY_NORMAL,
        c,
        matching([eth_type(ETH_TYPE_IPV4), hairpin()]),
        vec![apply(vec![Action::output(port::IN_PORT)])],
    ));
}

#[cfg(test)]
mod tests;
