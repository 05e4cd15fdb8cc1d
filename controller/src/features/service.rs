//! Services (what kube-proxy does): a new connection to a Service port is sent through the
//! port's select group, whose bucket DNATs it to one endpoint in conntrack (the node's zone)
//! and commits it, so every later packet of the connection, both ways, is NATed by the
//! Conntrack table's `ct(nat)` and never sees a group again.
//! Owners: [`Owner::Service`](super::Owner::Service) (one per Service: all its ports'
//! flows and groups, the same on every node) and
//! [`Owner::ServiceBase`](super::Owner::ServiceBase) (hairpin).
//!
//! Per Service port with endpoints: one ServiceLb flow (new connections to cluster IP,
//! protocol and port → `reg5` = port id, group) and one select group, a bucket per endpoint
//! doing the DNAT ([`dnat`]): the switch's work does not grow with the endpoints' number but
//! for the buckets. With session affinity, whose `learn` needs the endpoint in registers,
//! each bucket loads `reg3` = address, `reg4` = DNAT port and resubmits to the endpoint's
//! EndpointDnat flow, which learns and DNATs ([`endpoint_flows`]). Hairpin is decided once
//! per local pod ([`hairpin_flow`]). A port without
//! a usable endpoint gets a ServiceLb flow that sends new connections to the controller
//! through the reject meter; the node agent refuses them (TCP RST / ICMP port unreachable,
//! see `crate::reject`). So does an SCTP port on the userspace datapath, whose conntrack
//! cannot NAT it (`ResolvedPort::datapath_refuses`).
//!
//! A changed endpoint set changes the group's buckets (the realiser sends a group_mod
//! MODIFY: the group keeps its id and the ServiceLb flow is untouched) and, with affinity,
//! the EndpointDnat flows of the endpoints that came or went; connections to the remaining
//! endpoints are in conntrack and go on.
//!
//! NodePort, externalIPs, LoadBalancer IPs: node setup redirects the node's NodePort range
//! to [`NODE_PORT_VIP`] through the gateway and routes the external pools there, so each
//! is one more ServiceLb frontend of the port. External traffic under
//! `externalTrafficPolicy: Cluster` is flagged in reg6 and SNATed to the node's gateway
//! address in [`CT_ZONE_SNAT`] (ct_mark [`CT_MARK_SNAT`]); under Local it goes, unSNATed,
//! to the node's own endpoints ([`node_flows`], [`node_groups`]: the only Service flows that
//! differ per node), as does cluster-IP traffic under `internalTrafficPolicy: Local`; with
//! session affinity and with more local endpoints than a group holds, as the cluster path.
//!
//! Hairpin: a pod whose connection to a Service lands on itself would receive packets from
//! its own address, which Linux drops. Such a connection is marked [`CT_MARK_HAIRPIN`] by the
//! pod's own flow in ConntrackCommit (source = destination = the pod, after DNAT), SNATed
//! to [`HAIRPIN_SNAT_IP`] in [`CT_ZONE_HAIRPIN`] before output, and output to the port it
//! came in on; its replies (to the SNAT address) are un-SNATed in that
//! zone before the Conntrack table's own `ct(nat)`.

use openflow::action::{
    HashFields, Learn, LearnSpec, LearnSrc, Multipath, MultipathAlgorithm, Nat, NatKind,
};
use openflow::{Bucket, GroupDesc, GroupType};

use super::*;
use crate::ids;
use crate::pipeline::*;
use crate::policy::Protocol;
use std::net::Ipv4Addr;

use crate::model::NodeModel;
use crate::state::{ResolvedPort, ResolvedService};

/// The tables this feature writes.
pub const TABLES: &[Table] = &[
    Table::Conntrack,
    Table::ServiceLb,
    Table::EndpointDnat,
    Table::SessionAffinity,
    Table::L3Forwarding,
    Table::ConntrackCommit,
    Table::Output,
];

/// Priority of the hairpin SNAT flows (Conntrack's un-SNAT, ConntrackCommit's SNAT).
pub const PRIORITY_HAIRPIN: u16 = 210;
/// Priority of a local pod's hairpin flow in ConntrackCommit (above the SNAT flows).
pub const PRIORITY_HAIRPIN_MARK: u16 = 215;
/// Priority of an affinity port's EndpointDnat flow that sends a connection without a
/// learned endpoint to the group (below the endpoints' flows).
pub const PRIORITY_AFFINITY_MISS: u16 = 190;
/// Most endpoints in one select group. A group_mod is at most 64 KiB (OpenFlow's 16-bit
/// length) and our widest bucket is 104 bytes (16 of header and the DNAT's `ct` of 88:
/// its header, `nat(dst=IP:PORT)`, and in `exec` a `set_field` of ct_mark and a `move`), so
/// about 630 fit; 600 leaves room. A port with more endpoints gets several groups (ids
/// `ID | k << 24`, k = 1, 2, …), the endpoints dealt round-robin so their sizes differ by
/// at most one, and `multipath` picks one per connection.
pub const MAX_BUCKETS: usize = 600;
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

/// Priority of the ServiceLb flows of externalIPs / LoadBalancer IPs for traffic from the
/// gateway (the outside world or the node), above the any-source flow pods hit.
pub const PRIORITY_FROM_GATEWAY: u16 = 205;
/// Priority of a Local-policy ServiceLb flow for the node's own sources (its gateway
/// address, its InternalIP): kube-proxy sends the node's own traffic cluster-wide.
pub const PRIORITY_NODE_SOURCE: u16 = 210;
/// Priority of the ServiceLb flow that refuses a nodePort no Service has.
pub const PRIORITY_UNKNOWN_NODE_PORT: u16 = 10;
/// Priority of the L3Forwarding flow that sends a SNATed connection's replies, once
/// un-NATed, to the gateway (below every pod, node and gateway flow).
pub const PRIORITY_SNAT_REPLY: u16 = 10;

/// A port gets groups and endpoint flows: it has a usable endpoint and a protocol the
/// datapath balances (not so SCTP on the userspace datapath: see
/// [`crate::state::userspace_datapath_balances`]; such a port is refused as a port without
/// endpoints is).
fn balanced(port: &ResolvedPort) -> bool {
    !port.endpoints.is_empty() && !port.datapath_refuses
}

/// Where new connections to a Service port arrive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Frontend {
    /// The cluster IP and Service port.
    ClusterIp,
    /// [`NODE_PORT_VIP`] and the nodePort: what node setup redirects the nodes' NodePorts to.
    NodePort(u16),
    /// An externalIP or LoadBalancer ingress IP and the Service port.
    External(Ipv4Addr),
}

fn frontend_match(svc: &ResolvedService, port: &ResolvedPort, f: Frontend) -> Vec<MatchField> {
    let (ip, tp) = match f {
        Frontend::ClusterIp => (svc.cluster_ip, port.port),
        Frontend::NodePort(n) => (NODE_PORT_VIP, n),
        Frontend::External(ip) => (ip, port.port),
    };
    vec![
        eth_type(ETH_TYPE_IPV4),
        MatchField::u32_masked(Field::CtState, CT_NEW | CT_TRK, CT_NEW | CT_TRK),
        ip_proto(port.protocol),
        MatchField::ipv4(Field::Ipv4Dst, ip),
        dst_port(port.protocol, tp),
    ]
}

fn frontends(svc: &ResolvedService, port: &ResolvedPort) -> Vec<Frontend> {
    let mut out = vec![Frontend::ClusterIp];
    out.extend(port.node_port.map(Frontend::NodePort));
    out.extend(svc.external_ips.iter().copied().map(Frontend::External));
    out
}

fn from_gateway() -> MatchField {
    MatchField::u32(Field::Reg(REG_SOURCE_CLASS), SourceClass::Gateway as u32)
}

/// The flows of one Service (every port) that are the same on every node.
pub fn flows(svc: &ResolvedService, flows: &mut Vec<Flow>) {
    for port in &svc.ports {
        port_flows(svc, port, flows);
    }
}

fn port_flows(svc: &ResolvedService, port: &ResolvedPort, flows: &mut Vec<Flow>) {
    let c = ids::service_cookie(port.id);
    if !balanced(port) {
        // Refused, not left to time out: the node agent answers the packet-in with a TCP
        // RST or ICMP port unreachable (`crate::reject`); the meter bounds the rate. A port
        // the datapath cannot balance (`ResolvedPort::datapath_refuses`) is refused so too.
        for f in frontends(svc, port) {
            flows.push(flow(
                Table::ServiceLb,
                PRIORITY_NORMAL,
                c,
                matching(frontend_match(svc, port, f)),
                reject(),
            ));
        }
        return;
    }
    let affinity = svc.affinity_timeout.map(|t| affinity_learn(port, t));
    let slots = group_slots(port);
    if slots > 1 {
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
    } else if affinity.is_some() {
        // A miss in SessionAffinity (reg3 = 0, or an endpoint that is gone) goes to the group.
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
    let lb = |snat: bool| lb_actions(port, affinity.is_some(), slots, LbPath::Cluster { snat });
    for f in frontends(svc, port) {
        let m = frontend_match(svc, port, f);
        match f {
            Frontend::ClusterIp if !svc.internal_local => {
                flows.push(flow(
                    Table::ServiceLb,
                    PRIORITY_NORMAL,
                    c,
                    matching(m),
                    lb(false),
                ));
            }
            Frontend::ClusterIp => {}
            Frontend::NodePort(_) if !svc.external_local => {
                flows.push(flow(
                    Table::ServiceLb,
                    PRIORITY_NORMAL,
                    c,
                    matching(m),
                    lb(true),
                ));
            }
            Frontend::NodePort(_) => {}
            Frontend::External(_) => {
                // Pods reach it like the cluster IP; from the gateway it is external traffic.
                flows.push(flow(
                    Table::ServiceLb,
                    PRIORITY_NORMAL,
                    c,
                    matching(m.clone()),
                    lb(false),
                ));
                if !svc.external_local {
                    flows.push(flow(
                        Table::ServiceLb,
                        PRIORITY_FROM_GATEWAY,
                        c,
                        matching(m.into_iter().chain([from_gateway()])),
                        lb(true),
                    ));
                }
            }
        }
    }
    if let Some(learn) = &affinity {
        endpoint_flows(port, learn, &port.endpoints, flows);
    }
}

/// Which endpoint set a ServiceLb flow balances a new connection over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LbPath {
    /// The port's whole endpoint set (its groups are `ID`, or `ID | k << 24` with several);
    /// `snat` flags the connection for the gateway SNAT (external traffic under
    /// `externalTrafficPolicy: Cluster`, the node's own sources under Local).
    Cluster { snat: bool },
    /// The node's own endpoints under a Local policy (groups `local_slot_group_id`), flagged
    /// [`SERVICE_FLAG_LOCAL`] where EndpointDnat must tell the paths apart: a miss in
    /// SessionAffinity and a multipath slot go to the local groups
    /// ([`PRIORITY_LOCAL_DISPATCH`]), and the affinity learned is the local path's own.
    Local,
}

/// The instructions that balance a new connection over `path`'s endpoints of the port
/// (`slots` groups of them), affinity first when the Service has it: set reg5 = ID and the
/// path's flags; then with several groups a hash (multipath) picks one in reg7 and
/// EndpointDnat dispatches; with affinity alone a SessionAffinity hit has loaded reg3/reg4
/// and matches its endpoint's flow in EndpointDnat, a miss goes to the group there
/// (priority 190 cluster-wide, 195 local); otherwise the path's one group directly.
fn lb_actions(port: &ResolvedPort, affinity: bool, slots: usize, path: LbPath) -> Vec<Instruction> {
    let (flags, single_group) = match path {
        LbPath::Cluster { snat } => (if snat { SERVICE_FLAG_SNAT } else { 0 }, port.id),
        // Read only where the local path leaves the group out (affinity, slots).
        LbPath::Local => (
            if affinity || slots > 1 {
                SERVICE_FLAG_LOCAL
            } else {
                0
            },
            local_group_id(port.id),
        ),
    };
    let mut actions = vec![set_reg(REG_SERVICE_PORT, port.id)];
    if flags != 0 {
        actions.push(set_reg(REG_SERVICE_FLAGS, flags));
    }
    if affinity {
        actions.push(Action::resubmit_table(Table::SessionAffinity.id()));
    }
    if slots > 1 {
        actions.push(multipath_to_slot(port.id, slots));
        vec![apply(actions), goto(Table::EndpointDnat)]
    } else if affinity {
        vec![apply(actions), goto(Table::EndpointDnat)]
    } else {
        actions.push(Action::Group(single_group));
        vec![apply(actions)]
    }
}

fn reject() -> Vec<Instruction> {
    vec![
        Instruction::Meter(REJECT_METER_ID),
        apply(vec![Action::output(port::CONTROLLER)]),
    ]
}

/// The DNAT of a new Service connection to one endpoint: commit it in the node's zone,
/// translated to `ip:target`, marked a Service connection (ct_mark 0x1, and 0x4 from the
/// SNAT flag ServiceLb set, 0 otherwise), and go on in EgressRule with the endpoint's
/// address and port. In a select group's bucket (ports without session affinity) or in an
/// EndpointDnat flow (with it).
fn dnat(ip: Ipv4Addr, target: u16) -> Action {
    Action::Ct(Ct {
        commit: true,
        zone: CtZone::Value(CT_ZONE),
        table: Some(Table::EgressRule.id()),
        nat: Some(Nat {
            kind: Some(NatKind::Dst),
            addr_min: Some(ip.into()),
            port_min: Some(target),
            ..Nat::default()
        }),
        actions: vec![
            set_ct_mark(CT_MARK_SERVICE),
            Action::RegMove {
                src: Subfield::range(Field::Reg(REG_SERVICE_FLAGS), 0, 0),
                dst: Subfield::range(Field::CtMark, CT_MARK_SNAT_BIT, CT_MARK_SNAT_BIT),
            },
        ],
        ..Ct::default()
    })
}

/// The EndpointDnat flows of an affinity port's `endpoints`: the endpoint in reg3/reg4
/// (loaded by a group bucket or a learned SessionAffinity flow) → learn the affinity, DNAT.
/// Ports without affinity have none: their buckets DNAT. (Hairpin is decided later, once
/// per local pod: [`hairpin_flow`].)
fn endpoint_flows(
    port: &ResolvedPort,
    affinity: &Learn,
    endpoints: &[(Ipv4Addr, u16)],
    flows: &mut Vec<Flow>,
) {
    let c = ids::service_cookie(port.id);
    for &(ip, target) in endpoints {
        flows.push(flow(
            Table::EndpointDnat,
            PRIORITY_NORMAL,
            c,
            matching([
                eth_type(ETH_TYPE_IPV4),
                ip_proto(port.protocol),
                MatchField::u32(Field::Reg(REG_SERVICE_PORT), port.id),
                MatchField::u32(Field::Reg(REG_ENDPOINT_IP), u32::from(ip)),
                MatchField::u32(Field::Reg(REG_ENDPOINT_PORT), u32::from(target)),
            ]),
            vec![apply(vec![
                Action::Learn(affinity.clone()),
                dnat(ip, target),
            ])],
        ));
    }
}

/// True when the Service's flows on `node` include a node-local part (a Local traffic
/// policy on a port with endpoints).
fn uses_local(svc: &ResolvedService, port: &ResolvedPort) -> bool {
    balanced(port) && (svc.internal_local || (svc.external_local && frontends(svc, port).len() > 1))
}

/// The group id of a port's node-local endpoints when they fit one group.
fn local_group_id(port_id: u32) -> u32 {
    port_id | (LOCAL_GROUP_SLOT << 24)
}

/// How many groups `n` endpoints of a `protocol` port get (at most [`MAX_GROUP_SLOTS`] for
/// the cluster-wide set, one fewer for a node's local set: see the group id layout in
/// `pipeline`). TCP and SCTP: as many as [`MAX_BUCKETS`] per group needs. UDP: one group per
/// endpoint (up to the maximum), because OVS's select groups hash UDP without its ports
/// (`flow_hash_symmetric_l3l4(.., inc_udp_ports=false)`, both for the default and the
/// `dp_hash` method; hashing chosen fields needs the `selection_method` group property,
/// which only OpenFlow 1.5 group_mods carry), while `multipath` with
/// `symmetric_l3l4+udp` does hash them: so one client's UDP flows (new source ports) spread
/// over the endpoints as its TCP connections do.
fn slots_for(n: usize, max: usize, protocol: Protocol) -> usize {
    match protocol {
        Protocol::Udp => n.clamp(1, max),
        Protocol::Tcp | Protocol::Sctp => n.div_ceil(MAX_BUCKETS).clamp(1, max),
    }
}

/// How many groups a node's `local` endpoints of a port need.
fn local_slots(local: usize, protocol: Protocol) -> usize {
    slots_for(
        local,
        (LOCAL_GROUP_SLOT - LOCAL_SLOT_BASE) as usize,
        protocol,
    )
}

/// The group id of local slot `k` of a port: the single local group when it has one.
fn local_slot_group_id(port_id: u32, k: usize, slots: usize) -> u32 {
    if slots == 1 {
        local_group_id(port_id)
    } else {
        port_id | ((LOCAL_SLOT_BASE + k as u32) << 24)
    }
}

/// Priority of the EndpointDnat flows that send a Local path's connection (flag
/// [`SERVICE_FLAG_LOCAL`]) to one of the node's local groups: a multipath slot, or an
/// affinity miss. Above the cluster-wide dispatch ([`PRIORITY_AFFINITY_MISS`]), below the
/// endpoints' own flows.
pub const PRIORITY_LOCAL_DISPATCH: u16 = 195;

/// The flows of one Service that differ per node: those of its Local traffic policies
/// (kube-proxy's topology.go). `internalTrafficPolicy: Local`: the cluster IP balances over
/// the node's own endpoints only, dropped when it has none. `externalTrafficPolicy: Local`:
/// traffic from outside to the NodePort, externalIPs and LoadBalancer IPs goes to the node's
/// own endpoints, unSNATed (the client's address preserved), dropped when it has none;
/// traffic from the node itself (its gateway address: also its pods, masqueraded on their
/// way to a NodePort; its InternalIP) is balanced cluster-wide and SNATed, as kube-proxy
/// does. Ports without any usable endpoint are refused by the shared flows. The local path
/// has session affinity as the cluster path does (learned apart from it), and more local
/// endpoints than one group holds are dealt over several groups picked by multipath.
pub fn node_flows(svc: &ResolvedService, node: &NodeModel, flows: &mut Vec<Flow>) {
    let affinity_timeout = svc.affinity_timeout;
    for port in svc.ports.iter().filter(|p| uses_local(svc, p)) {
        let c = ids::service_cookie(port.id);
        let local = port.local_endpoints(node.pod_cidr);
        let affinity = affinity_timeout.map(|t| affinity_learn(port, t));
        let slots = local_slots(local.len(), port.protocol);
        let to_local = if local.is_empty() {
            Vec::new()
        } else {
            lb_actions(port, affinity.is_some(), slots, LbPath::Local)
        };
        if !local.is_empty() && (slots > 1 || affinity.is_some()) {
            let local_flag = MatchField::u32_masked(
                Field::Reg(REG_SERVICE_FLAGS),
                SERVICE_FLAG_LOCAL,
                SERVICE_FLAG_LOCAL,
            );
            for k in 0..slots {
                let mut m = vec![
                    eth_type(ETH_TYPE_IPV4),
                    ip_proto(port.protocol),
                    MatchField::u32(Field::Reg(REG_SERVICE_PORT), port.id),
                    local_flag.clone(),
                ];
                if slots > 1 {
                    m.push(MatchField::u32(Field::Reg(REG_GROUP_SLOT), k as u32));
                }
                flows.push(flow(
                    Table::EndpointDnat,
                    PRIORITY_LOCAL_DISPATCH,
                    c,
                    matching(m),
                    vec![apply(vec![Action::Group(local_slot_group_id(
                        port.id, k, slots,
                    ))])],
                ));
            }
        }
        let node_sources = [node.gateway_ip(), node.internal_ip];
        for f in frontends(svc, port) {
            let m = frontend_match(svc, port, f);
            match f {
                Frontend::ClusterIp if svc.internal_local => {
                    flows.push(flow(
                        Table::ServiceLb,
                        PRIORITY_NORMAL,
                        c,
                        matching(m),
                        to_local.clone(),
                    ));
                }
                Frontend::NodePort(_) | Frontend::External(_) if svc.external_local => {
                    let m: Vec<MatchField> = match f {
                        Frontend::External(_) => m.into_iter().chain([from_gateway()]).collect(),
                        _ => m,
                    };
                    let priority = match f {
                        Frontend::External(_) => PRIORITY_FROM_GATEWAY,
                        _ => PRIORITY_NORMAL,
                    };
                    flows.push(flow(
                        Table::ServiceLb,
                        priority,
                        c,
                        matching(m.clone()),
                        to_local.clone(),
                    ));
                    for src in node_sources {
                        flows.push(flow(
                            Table::ServiceLb,
                            PRIORITY_NODE_SOURCE,
                            c,
                            matching(
                                m.iter()
                                    .cloned()
                                    .chain([MatchField::ipv4(Field::Ipv4Src, src)]),
                            ),
                            lb_actions(
                                port,
                                affinity_timeout.is_some(),
                                group_slots(port),
                                LbPath::Cluster { snat: true },
                            ),
                        ));
                    }
                }
                _ => {}
            }
        }
        // With affinity, local serving-and-terminating endpoints used while the cluster has
        // ready ones elsewhere have no shared EndpointDnat flows.
        if let Some(learn) = &affinity {
            let extra: Vec<(Ipv4Addr, u16)> = local
                .into_iter()
                .filter(|e| port.endpoints.binary_search(e).is_err())
                .collect();
            endpoint_flows(port, learn, &extra, flows);
        }
    }
}

/// The groups of one Service that differ per node: per port under a Local policy, the
/// select group(s) of the node's own endpoints (none when it has none): one, or as many as
/// [`MAX_BUCKETS`] per group needs, the endpoints dealt round-robin as for the cluster set.
pub fn node_groups(svc: &ResolvedService, node: &NodeModel) -> Vec<GroupDesc> {
    let affinity = svc.affinity_timeout.is_some();
    let mut out = Vec::new();
    for p in svc.ports.iter().filter(|p| uses_local(svc, p)) {
        let local = p.local_endpoints(node.pod_cidr);
        if local.is_empty() {
            continue;
        }
        let slots = local_slots(local.len(), p.protocol);
        for k in 0..slots {
            out.push(GroupDesc {
                group_type: GroupType::Select,
                group_id: local_slot_group_id(p.id, k, slots),
                buckets: local
                    .iter()
                    .skip(k)
                    .step_by(slots)
                    .map(|&(ip, t)| endpoint_bucket(ip, t, affinity))
                    .collect(),
            });
        }
    }
    out
}

/// A select group's bucket for one endpoint: the DNAT itself, or, for a port with session
/// affinity, the endpoint in reg3/reg4 and on to its EndpointDnat flow (which learns it).
fn endpoint_bucket(ip: Ipv4Addr, target: u16, affinity: bool) -> Bucket {
    let actions = if affinity {
        vec![
            set_reg(REG_ENDPOINT_IP, u32::from(ip)),
            set_reg(REG_ENDPOINT_PORT, u32::from(target)),
            Action::resubmit_table(Table::EndpointDnat.id()),
        ]
    } else {
        vec![dnat(ip, target)]
    };
    Bucket::weighted(100, actions)
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
    let local_bit = Subfield::range(Field::Reg(REG_SERVICE_FLAGS), 1, 1);
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
            // The path the connection took (cluster-wide or a Local policy's): each learns
            // and finds its own affinities.
            LearnSpec::Match {
                src: LearnSrc::Field(local_bit),
                dst: local_bit,
            },
            load(REG_ENDPOINT_IP),
            load(REG_ENDPOINT_PORT),
        ],
        ..Learn::default()
    }
}

/// How many groups a port's endpoints need (top bytes 1..=[`MAX_GROUP_SLOTS`]: the local
/// groups take the ones above).
fn group_slots(port: &ResolvedPort) -> usize {
    slots_for(port.endpoints.len(), MAX_GROUP_SLOTS, port.protocol)
}

/// The group id of slot `k` of a port: the port id itself when it has one group.
fn slot_group_id(port_id: u32, k: usize) -> u32 {
    port_id | (((k as u32) + 1) << 24)
}

/// `multipath(symmetric_l3l4+udp, ID, modulo_n, SLOTS, 0, reg7[0..15])`. The basis is the
/// port id, so the slot choice does not repeat the select group's own hash; unlike select
/// groups it hashes UDP ports too.
fn multipath_to_slot(port_id: u32, slots: usize) -> Action {
    Action::Multipath(Multipath {
        fields: HashFields::SymmetricL3L4Udp,
        basis: port_id as u16,
        algorithm: MultipathAlgorithm::ModuloN,
        n_links: slots as u32,
        arg: 0,
        dst: Subfield::range(Field::Reg(REG_GROUP_SLOT), 0, 15),
    })
}

/// The select groups of one Service: per port with endpoints, one group (id = the port
/// id) with a bucket per endpoint, or several of at most [`MAX_BUCKETS`].
pub fn groups(svc: &ResolvedService) -> Vec<GroupDesc> {
    let affinity = svc.affinity_timeout.is_some();
    let mut out = Vec::new();
    for p in svc.ports.iter().filter(|p| balanced(p)) {
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
                    .map(|&(ip, target)| endpoint_bucket(ip, target, affinity))
                    .collect(),
            });
        }
    }
    out
}

/// One SNAT in its own conntrack zone, three flows: replies to `address` are un-SNATed in
/// `zone` and go back to the Conntrack table (now tracked, so this does not match twice)
/// for the node's zone; a new connection carrying `mark` is committed there with `nat`
/// (and `exec`); its later packets in the original direction are NATed in `zone` again.
#[allow(clippy::too_many_arguments)]
fn snat_zone_flows(
    flows: &mut Vec<Flow>,
    cookie: u64,
    zone: u16,
    mark: u32,
    address: std::net::Ipv4Addr,
    nat: Nat,
    exec: Vec<Action>,
) {
    let marked = || MatchField::u32_masked(Field::CtMark, mark, mark);
    flows.push(flow(
        Table::Conntrack,
        PRIORITY_HAIRPIN,
        cookie,
        matching([
            eth_type(ETH_TYPE_IPV4),
            MatchField::u32_masked(Field::CtState, 0, CT_TRK),
            MatchField::ipv4(Field::Ipv4Dst, address),
        ]),
        vec![apply(vec![Action::Ct(Ct {
            zone: CtZone::Value(zone),
            table: Some(Table::Conntrack.id()),
            nat: Some(Nat::default()),
            ..Ct::default()
        })])],
    ));
    flows.push(flow(
        Table::ConntrackCommit,
        PRIORITY_HAIRPIN,
        cookie,
        matching([
            eth_type(ETH_TYPE_IPV4),
            MatchField::u32_masked(Field::CtState, CT_NEW | CT_TRK, CT_NEW | CT_TRK),
            marked(),
        ]),
        vec![apply(vec![Action::Ct(Ct {
            commit: true,
            zone: CtZone::Value(zone),
            table: Some(Table::Output.id()),
            nat: Some(nat),
            actions: exec,
            ..Ct::default()
        })])],
    ));
    flows.push(flow(
        Table::ConntrackCommit,
        PRIORITY_HAIRPIN_EST,
        cookie,
        matching([
            eth_type(ETH_TYPE_IPV4),
            MatchField::u32_masked(Field::CtState, CT_EST | CT_TRK, CT_EST | CT_RPL | CT_TRK),
            marked(),
        ]),
        vec![apply(vec![Action::Ct(Ct {
            zone: CtZone::Value(zone),
            table: Some(Table::Output.id()),
            nat: Some(Nat::default()),
            ..Ct::default()
        })])],
    ));
}

/// A local pod's hairpin flow (owner: the pod): a new Service connection (ct_mark 0x1)
/// DNATed to the pod that opened it (source = destination = the pod, after EndpointDnat)
/// is marked hairpin in the node's zone (a commit of the tracked connection again, which
/// updates its mark) and goes back to ConntrackCommit, where the hairpin SNAT flows take
/// it. One flow per local pod, instead of one per Service endpoint on every node.
pub fn hairpin_flow(pod_ip: Ipv4Addr, cookie: u64) -> Flow {
    flow(
        Table::ConntrackCommit,
        PRIORITY_HAIRPIN_MARK,
        cookie,
        matching([
            eth_type(ETH_TYPE_IPV4),
            MatchField::u32_masked(Field::CtState, CT_NEW | CT_TRK, CT_NEW | CT_TRK),
            MatchField::u32_masked(
                Field::CtMark,
                CT_MARK_SERVICE,
                CT_MARK_SERVICE | CT_MARK_HAIRPIN,
            ),
            MatchField::ipv4(Field::Ipv4Src, pod_ip),
            MatchField::ipv4(Field::Ipv4Dst, pod_ip),
        ]),
        vec![apply(vec![Action::Ct(Ct {
            commit: true,
            zone: CtZone::Value(CT_ZONE),
            table: Some(Table::ConntrackCommit.id()),
            actions: vec![set_ct_mark(CT_MARK_SERVICE | CT_MARK_HAIRPIN)],
            ..Ct::default()
        })])],
    )
}

/// The fixed flows: hairpin un-SNAT, SNAT and output; the gateway SNAT of external
/// Service traffic (un-SNAT, SNAT, replies to the gateway) with the node's gateway address;
/// the refusal of nodePorts no Service has.
pub fn base_flows(node: &NodeModel, flows: &mut Vec<Flow>) {
    let c = ids::service_base_cookie();
    let gw = node.gateway_ip();
    let snat = || MatchField::u32_masked(Field::CtMark, CT_MARK_SNAT, CT_MARK_SNAT);
    // Replies to the gateway address: un-SNAT in the SNAT zone first (a packet of no SNATed
    // connection passes unchanged), then the Conntrack table again for the node's zone.
    snat_zone_flows(
        flows,
        c,
        CT_ZONE_SNAT,
        CT_MARK_SNAT,
        gw,
        Nat {
            kind: Some(NatKind::Src),
            addr_min: Some(gw.into()),
            port_min: Some(SNAT_PORTS.0),
            port_max: Some(SNAT_PORTS.1),
            ..Nat::default()
        },
        Vec::new(),
    );
    // A SNATed connection's replies, un-NATed, are for a client outside the pod network: to
    // the gateway (they may have come through the tunnel, with the tunnel peer MAC).
    flows.push(flow(
        Table::L3Forwarding,
        PRIORITY_SNAT_REPLY,
        c,
        matching([
            eth_type(ETH_TYPE_IPV4),
            MatchField::u32_masked(Field::CtState, CT_RPL | CT_TRK, CT_RPL | CT_TRK),
            snat(),
        ]),
        vec![
            apply(vec![
                set_mac(Field::EthSrc, TUNNEL_PEER_MAC),
                set_mac(Field::EthDst, mac_for(gw)),
            ]),
            goto(Table::L2ForwardingCalc),
        ],
    ));
    // Node setup redirects the whole NodePort range: a nodePort no Service has is refused,
    // as the node's stack would refuse a closed port.
    flows.push(flow(
        Table::ServiceLb,
        PRIORITY_UNKNOWN_NODE_PORT,
        c,
        matching([
            eth_type(ETH_TYPE_IPV4),
            MatchField::u32_masked(Field::CtState, CT_NEW | CT_TRK, CT_NEW | CT_TRK),
            MatchField::ipv4(Field::Ipv4Dst, NODE_PORT_VIP),
        ]),
        reject(),
    ));
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
    snat_zone_flows(
        flows,
        c,
        CT_ZONE_HAIRPIN,
        CT_MARK_HAIRPIN,
        HAIRPIN_SNAT_IP,
        Nat {
            kind: Some(NatKind::Src),
            addr_min: Some(HAIRPIN_SNAT_IP.into()),
            ..Nat::default()
        },
        vec![set_ct_mark(CT_MARK_SERVICE | CT_MARK_HAIRPIN)],
    );
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
