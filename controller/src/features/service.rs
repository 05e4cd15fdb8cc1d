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

use openflow::action::{Learn, LearnSpec, LearnSrc, Nat, NatKind};
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
    Table::SessionAffinity,
    Table::ConntrackCommit,
    Table::Output,
];

/// Priority of the hairpin variant of an EndpointDnat flow (above the plain one).
pub const PRIORITY_HAIRPIN: u16 = 210;
/// Priority of an affinity port's EndpointDnat flow that sends a connection without a
/// learned endpoint to the group (below the endpoints' flows).
pub const PRIORITY_AFFINITY_MISS: u16 = 190;
/// Most endpoints in one select group. A group_mod is at most 64 KiB (OpenFlow's 16-bit
/// length) and one of our buckets is 64 bytes (16 of header, two `set_field`s of 16 and a
/// `resubmit` of 16), so about 1020 fit; 800 leaves room. A port with more endpoints gets
/// several groups (ids `ID | k << 24`, k = 1, 2, …), the endpoints dealt round-robin so
/// their sizes differ by at most one, and `multipath` picks one per connection.
pub const MAX_BUCKETS: usize = 800;
/// NX_LEARN_F_DELETE_LEARNED: the learned flows go with the flow that learned them (an
/// endpoint that leaves takes its affinities along).
const LEARN_DELETE_LEARNED: u16 = 2;
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
    let affinity = svc.affinity_timeout.map(|t| affinity_learn(port, t));
    let slots = group_slots(port);
    if slots > 1 {
        // Several groups: a hash (multipath) picks one in reg7, EndpointDnat dispatches.
        let mut actions = vec![set_reg(REG_SERVICE_PORT, port.id)];
        if affinity.is_some() {
            actions.push(Action::resubmit_table(Table::SessionAffinity.id()));
        }
        actions.push(multipath_to_slot(port.id, slots));
        flows.push(flow(
            Table::ServiceLb,
            PRIORITY_NORMAL,
            c,
            new_to_service.clone(),
            vec![apply(actions), goto(Table::EndpointDnat)],
        ));
        for k in 0..slots {
            flows.push(flow(
                Table::EndpointDnat,
                PRIORITY_AFFINITY_MISS,
                c,
                matching([
                    eth_type(ETH_TYPE_IPV4),
                    ip_proto(port.protocol),
                    MatchField::u32(Field::Reg(REG_SERVICE_PORT), port.id),
                    MatchField::u32(Field::Reg(REG_GROUP_SLOT), k as u32),
                ]),
                vec![apply(vec![Action::Group(slot_group_id(port.id, k))])],
            ));
        }
    }
    match &affinity {
        _ if slots > 1 => {}
        None => flows.push(flow(
            Table::ServiceLb,
            PRIORITY_NORMAL,
            c,
            new_to_service,
            vec![apply(vec![
                set_reg(REG_SERVICE_PORT, port.id),
                Action::Group(port.id),
            ])],
        )),
        Some(_) => {
            // Look the client up in SessionAffinity (a hit loads reg3/reg4), then
            // EndpointDnat: a hit matches its endpoint's flow, a miss (reg3 = 0, or an
            // endpoint that is gone) the group.
            flows.push(flow(
                Table::ServiceLb,
                PRIORITY_NORMAL,
                c,
                new_to_service,
                vec![
                    apply(vec![
                        set_reg(REG_SERVICE_PORT, port.id),
                        Action::resubmit_table(Table::SessionAffinity.id()),
                    ]),
                    goto(Table::EndpointDnat),
                ],
            ));
            flows.push(flow(
                Table::EndpointDnat,
                PRIORITY_AFFINITY_MISS,
                c,
                matching([
                    eth_type(ETH_TYPE_IPV4),
                    ip_proto(port.protocol),
                    MatchField::u32(Field::Reg(REG_SERVICE_PORT), port.id),
                ]),
                vec![apply(vec![Action::Group(port.id)])],
            ));
        }
    }
    for &(ip, target) in &port.endpoints {
        let dnat = |mark: u32| {
            let mut actions: Vec<Action> = affinity.iter().cloned().map(Action::Learn).collect();
            actions.push(Action::Ct(Ct {
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
            }));
            vec![apply(actions)]
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

/// The `learn` of an affinity port's endpoint flows: a flow in SessionAffinity that maps
/// this client (its address), the Service's address, protocol and port to the endpoint in
/// reg3/reg4, for `timeout` seconds after the client's last new connection (kube-proxy's
/// `recent` match is refreshed the same way). OpenFlow timeouts are 16 bits: longer ones
/// are capped at 65535 s (about 18 hours; the API allows up to 86400).
fn affinity_learn(port: &ResolvedPort, timeout: u32) -> Learn {
    let same = |field: Field| LearnSpec::Match {
        src: LearnSrc::Field(Subfield::whole(field)),
        dst: Subfield::whole(field),
    };
    let load = |reg: u8| LearnSpec::Load {
        src: LearnSrc::Field(Subfield::whole(Field::Reg(reg))),
        dst: Subfield::whole(Field::Reg(reg)),
    };
    let dst_field = match port.protocol {
        Protocol::Tcp => Field::TcpDst,
        Protocol::Udp => Field::UdpDst,
        Protocol::Sctp => Field::SctpDst,
    };
    Learn {
        idle_timeout: u16::try_from(timeout).unwrap_or(u16::MAX),
        priority: PRIORITY_NORMAL,
        cookie: ids::service_affinity_cookie(port.id),
        flags: LEARN_DELETE_LEARNED,
        table_id: Table::SessionAffinity.id(),
        specs: vec![
            LearnSpec::Match {
                src: LearnSrc::value(u128::from(ETH_TYPE_IPV4), 16),
                dst: Subfield::whole(Field::EthType),
            },
            LearnSpec::Match {
                src: LearnSrc::value(u128::from(port.protocol.number()), 8),
                dst: Subfield::whole(Field::IpProto),
            },
            same(Field::Ipv4Src),
            same(Field::Ipv4Dst),
            same(dst_field),
            load(REG_ENDPOINT_IP),
            load(REG_ENDPOINT_PORT),
        ],
        ..Learn::default()
    }
}

/// How many groups a port's endpoints need.
fn group_slots(port: &ResolvedPort) -> usize {
    // At most 254 slots: k + 1 fits the id's top byte without reaching OFPG_MAX.
    port.endpoints.len().div_ceil(MAX_BUCKETS).clamp(1, 254)
}

/// The group id of slot `k` of a port: the port id itself when it has one group.
fn slot_group_id(port_id: u32, k: usize) -> u32 {
    port_id | (((k as u32) + 1) << 24)
}

/// NXAST_MULTIPATH: `multipath(symmetric_l3l4+udp, basis, modulo_n, slots - 1, 0,
/// reg7[0..15])` (nicira-ext.h `struct nx_action_multipath`). The basis is the port id, so
/// the slot choice does not repeat the select group's own hash; unlike select groups it
/// hashes UDP ports too.
fn multipath_to_slot(port_id: u32, slots: usize) -> Action {
    const NXAST_MULTIPATH: u16 = 10;
    const NX_HASH_FIELDS_SYMMETRIC_L3L4_UDP: u16 = 3;
    const NX_MP_ALG_MODULO_N: u16 = 0;
    // NXM_NX_REG7: class 0x0001, field 7, 4 bytes.
    let dst: u32 = (1 << 16) | ((u32::from(REG_GROUP_SLOT)) << 9) | 4;
    let mut data = Vec::with_capacity(24);
    data.extend_from_slice(&NXAST_MULTIPATH.to_be_bytes());
    data.extend_from_slice(&NX_HASH_FIELDS_SYMMETRIC_L3L4_UDP.to_be_bytes());
    data.extend_from_slice(&(port_id as u16).to_be_bytes());
    data.extend_from_slice(&[0, 0]);
    data.extend_from_slice(&NX_MP_ALG_MODULO_N.to_be_bytes());
    data.extend_from_slice(&((slots - 1) as u16).to_be_bytes());
    data.extend_from_slice(&0u32.to_be_bytes());
    data.extend_from_slice(&[0, 0]);
    data.extend_from_slice(&15u16.to_be_bytes()); // ofs 0, 16 bits
    data.extend_from_slice(&dst.to_be_bytes());
    Action::Experimenter {
        experimenter: 0x0000_2320,
        data: data.into(),
    }
}

/// The select groups of one Service: per port with endpoints, one group (id = the port
/// id) with a bucket per endpoint, or several of at most [`MAX_BUCKETS`].
pub fn groups(svc: &ResolvedService) -> Vec<GroupDesc> {
    let mut out = Vec::new();
    for p in svc.ports.iter().filter(|p| !p.endpoints.is_empty()) {
        let slots = group_slots(p);
        for k in 0..slots {
            let group_id = if slots == 1 {
                p.id
            } else {
                slot_group_id(p.id, k)
            };
            out.push(GroupDesc {
                group_type: GroupType::Select,
                group_id,
                buckets: p
                    .endpoints
                    .iter()
                    .skip(k)
                    .step_by(slots)
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
            });
        }
    }
    out
}

/// The fixed flows: hairpin un-SNAT, SNAT and output.
pub fn base_flows(flows: &mut Vec<Flow>) {
    let c = ids::service_base_cookie();
    // SessionAffinity holds learned flows only; a miss does nothing (it is resubmitted to).
    flows.push(flow(
        Table::SessionAffinity,
        PRIORITY_DEFAULT,
        c,
        Match::new(),
        Vec::new(),
    ));
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
