//! NetworkPolicy: conjunctive matches in EgressRule and IngressRule. Owners
//! [`Owner::PolicyBase`](super::Owner::PolicyBase) and
//! [`Owner::Policy`](super::Owner::Policy) (a [`PolicyOwner`]).
//!
//! A rule R (conjunction id `conj_id(R)`) is a conjunction of up to two clauses, both at
//! [`PRIORITY_CONJ`]:
//! - clause 1, the *selected pods* of R on this node, owned by
//!   `Target(direction, pod)`: ingress `nw_dst=pod` (× R's ports resolved against that pod:
//!   a named port is the pod's containerPort of that name and protocol), egress
//!   `nw_src=pod`;
//! - clause 2, the *peers*, owned by `Peer(direction, address)`: ingress `nw_src=address`,
//!   egress `nw_dst=address` × R's ports resolved against the destination (a named port
//!   against the pod at that address; never against an ipBlock).
//!
//! A match flow is shared: its one owner lists the `conjunction` action of every rule that
//! needs it (Antrea's O(N²) → O(N) fix), so a pod joining or leaving a peer selector
//! recomputes only the flows naming its address, and a pod's own clause flows live on its
//! node alone. A rule with one clause only (ingress with any source; egress with any
//! destination and any port) cannot be a conjunction (OVS wants 2..=64 clauses): its
//! selected pods get a direct allow at [`PRIORITY_DIRECT`] instead. `Rule(R)` owns the
//! `conj_id=R` flow that allows (goto the next table); it exists only on nodes holding pods
//! R's policy selects. `Target` also owns the pod's default drop at [`PRIORITY_ISOLATED`]
//! in each direction it is isolated for: its `n_packets` counts the pod's dropped packets.
//!
//! `PolicyBase` lets established and related traffic through (conntrack), and in
//! IngressRule the traffic of the node itself (from the gateway with one of the node's own
//! addresses as source: kubelet probes), above all of it. An established connection
//! therefore survives a policy that would deny it (the choice of OVN, Calico and Cilium;
//! see docs/pipeline.md); new connections are judged.

use ipnet::Ipv4Net;

use super::*;
use crate::ids;
use crate::model::PodModel;
use crate::pipeline::*;
use crate::policy::{Direction, PolicyPort, PortMatch, Rule, port_masks};
use crate::state::{PolicyOwner, RuleKey};

/// The tables this feature writes.
pub const TABLES: &[Table] = &[Table::EgressRule, Table::IngressRule];

/// Conntrack bypass and the node's own traffic.
pub const PRIORITY_BYPASS: u16 = 250;
/// Clause flows and `conj_id` flows.
pub const PRIORITY_CONJ: u16 = 210;
/// Direct allows of one-clause rules.
pub const PRIORITY_DIRECT: u16 = 205;
/// The default drop of an isolated pod.
pub const PRIORITY_ISOLATED: u16 = 100;

const CT_EST: u32 = 0x02;
const CT_REL: u32 = 0x04;

fn table(direction: Direction) -> Table {
    match direction {
        Direction::Ingress => Table::IngressRule,
        Direction::Egress => Table::EgressRule,
    }
}

fn next(direction: Direction) -> Table {
    match direction {
        Direction::Ingress => Table::ConntrackCommit,
        Direction::Egress => Table::L3Forwarding,
    }
}

/// How many clauses a rule's conjunction has (1 = no conjunction, a direct allow).
fn clauses(rule: &Rule, direction: Direction) -> u8 {
    let peer_clause = match direction {
        Direction::Ingress => rule.peers.is_some(),
        // The destination ports belong to the peer clause (they are resolved against it).
        Direction::Egress => rule.peers.is_some() || rule.ports.is_some(),
    };
    1 + u8::from(peer_clause)
}

/// The fixed flows of the feature on `node`: the conntrack bypass (the same everywhere) and
/// the node's own traffic, which enters br-int from the gateway with one of the node's
/// addresses as its source (its gateway address: kubelet probes, host-network pods, pods
/// masqueraded by the host; its InternalIP: the host's own NodePort connections). Others
/// that come from the gateway (external clients of a NodePort, externalIP or LB IP, their
/// source kept up to here) are judged by the rules like any peer.
pub fn base_flows(node: &NodeModel, flows: &mut Vec<Flow>) {
    let c = ids::policy_base_cookie();
    for d in Direction::BOTH {
        for bit in [CT_EST, CT_REL] {
            flows.push(flow(
                table(d),
                PRIORITY_BYPASS,
                c,
                matching([
                    eth_type(ETH_TYPE_IPV4),
                    MatchField::u32_masked(Field::CtState, bit | CT_TRK, bit | CT_TRK),
                ]),
                vec![goto(next(d))],
            ));
        }
    }
    let mut own = vec![node.gateway_ip(), node.internal_ip];
    own.dedup();
    for address in own {
        flows.push(flow(
            Table::IngressRule,
            PRIORITY_BYPASS,
            c,
            matching([
                MatchField::u32(Field::Reg(REG_SOURCE_CLASS), SourceClass::Gateway as u32),
                eth_type(ETH_TYPE_IPV4),
                MatchField::ipv4(Field::Ipv4Src, address),
            ]),
            vec![goto(Table::ConntrackCommit)],
        ));
    }
}

/// The flows of one policy owner on the context's node.
pub fn flows(owner: &PolicyOwner, ctx: &NodeContext<'_>, flows: &mut Vec<Flow>) {
    let mut merged = Merged::default();
    match owner {
        PolicyOwner::Target(d, pod) => target(*d, pod, ctx, &mut merged),
        PolicyOwner::Peer(d, net) => peer(*d, *net, ctx, &mut merged),
        PolicyOwner::Rule(rule) => {
            let s = ctx.state;
            if let (Some(r), Some(id)) = (s.rule(rule), s.conj_id(rule))
                && s.policy_on(&rule.policy, &ctx.node.name)
                && clauses(r, rule.direction) > 1
            {
                let audited = s.policy(&rule.policy).is_some_and(|p| p.audit);
                flows.push(flow(
                    table(rule.direction),
                    PRIORITY_CONJ,
                    ids::policy_rule_cookie(id),
                    matching([MatchField::u32(Field::ConjId, id)]),
                    allow(next(rule.direction), audited),
                ));
            }
        }
    }
    merged.into_flows(flows);
}

/// Flows by (table, priority, match) with their accumulated actions: one match flow for
/// every rule that needs it.
#[derive(Default)]
struct Merged {
    flows: std::collections::BTreeMap<(Table, u16, Vec<MatchField>), (u64, Kind)>,
}

enum Kind {
    Conj(std::collections::BTreeSet<(u32, u8, u8)>),
    /// Go on to the table; audited: a copy to the controller first.
    Allow(Table, bool),
    /// The default drop; audited: a copy to the controller.
    Drop(bool),
}

/// The copy of an audited packet for the controller (`crate::audit`): the first
/// `AUDIT_MAX_LEN` bytes, through the audit meter, which limits the copies only — the
/// packet itself goes on whatever the meter decides. Only a connection's first packet
/// (ct_state +new) reaches a rule or drop flow: the established and related ones bypass
/// them at [`PRIORITY_BYPASS`].
fn audit_copy() -> Action {
    Action::Controller2(openflow::Controller2 {
        max_len: Some(AUDIT_MAX_LEN),
        meter_id: Some(AUDIT_METER_ID),
        ..Default::default()
    })
}

/// The instructions that allow: go on to `next`, after a copy to the controller if audited.
fn allow(next: Table, audited: bool) -> Vec<Instruction> {
    if audited {
        vec![apply(vec![audit_copy()]), goto(next)]
    } else {
        vec![goto(next)]
    }
}

impl Merged {
    fn conj(&mut self, t: Table, cookie: u64, m: Vec<MatchField>, id: u32, clause: u8, n: u8) {
        let e = self
            .flows
            .entry((t, PRIORITY_CONJ, m))
            .or_insert_with(|| (cookie, Kind::Conj(Default::default())));
        if let Kind::Conj(set) = &mut e.1 {
            set.insert((id, clause, n));
        }
    }

    fn other(&mut self, t: Table, priority: u16, cookie: u64, m: Vec<MatchField>, k: Kind) {
        let audited = matches!(k, Kind::Allow(_, true) | Kind::Drop(true));
        let e = self.flows.entry((t, priority, m)).or_insert((cookie, k));
        // A flow shared by several rules is audited when one of them is, and then names
        // (by its cookie) an audited one.
        if audited {
            match &mut e.1 {
                Kind::Allow(_, a) | Kind::Drop(a) if !*a => {
                    *a = true;
                    e.0 = cookie;
                }
                _ => {}
            }
        }
    }

    fn into_flows(self, out: &mut Vec<Flow>) {
        for ((t, priority, m), (cookie, kind)) in self.flows {
            let instructions = match kind {
                Kind::Conj(set) => vec![apply(
                    set.into_iter()
                        .map(|(id, clause, n_clauses)| Action::Conjunction {
                            id,
                            clause,
                            n_clauses,
                        })
                        .collect(),
                )],
                Kind::Allow(next, audited) => allow(next, audited),
                Kind::Drop(true) => vec![apply(vec![audit_copy()])],
                Kind::Drop(false) => vec![],
            };
            out.push(flow(t, priority, cookie, matching(m), instructions));
        }
    }
}

fn ip_net(field: Field, net: Ipv4Net) -> Vec<MatchField> {
    let mut m = vec![eth_type(ETH_TYPE_IPV4)];
    // 0.0.0.0/0 is every address: no field at all (a zero mask is not a match).
    if net.prefix_len() > 0 {
        m.push(MatchField::ipv4_prefix(
            field,
            net.network(),
            net.prefix_len(),
        ));
    }
    m
}

/// The L4 matches of one policy port towards a destination (`None` when the destination
/// is not a pod: a named port resolves against pods only).
fn port_matches(p: &PolicyPort, dest: Option<&PodModel>) -> Vec<Vec<MatchField>> {
    let proto = MatchField::u8(Field::IpProto, p.protocol.number());
    let dst = match p.protocol {
        crate::policy::Protocol::Tcp => Field::TcpDst,
        crate::policy::Protocol::Udp => Field::UdpDst,
        crate::policy::Protocol::Sctp => Field::SctpDst,
    };
    let ranges = match &p.port {
        PortMatch::Any => return vec![vec![proto]],
        PortMatch::Range(a, b) => port_masks(*a, *b),
        PortMatch::Named(name) => match dest.and_then(|pod| pod.named_port(name, p.protocol)) {
            Some(n) => vec![(n, 0xffff)],
            None => vec![],
        },
    };
    ranges
        .into_iter()
        .map(|(value, mask)| {
            let port = if mask == 0xffff {
                MatchField::u16(dst, value)
            } else {
                MatchField::u16_masked(dst, value, mask)
            };
            vec![proto.clone(), port]
        })
        .collect()
}

/// `base` × the rule's ports (resolved against `dest`), or `base` alone without ports.
fn with_ports(
    base: Vec<MatchField>,
    ports: Option<&[PolicyPort]>,
    dest: Option<&PodModel>,
    named_only: Option<bool>,
) -> Vec<Vec<MatchField>> {
    let Some(ports) = ports else {
        return vec![base];
    };
    let mut out = Vec::new();
    for p in ports {
        let named = matches!(p.port, PortMatch::Named(_));
        if named_only.is_some_and(|only| only != named) {
            continue;
        }
        for l4 in port_matches(p, dest) {
            let mut m = base.clone();
            m.extend(l4);
            out.push(m);
        }
    }
    out
}

fn target(d: Direction, key: &ObjectKey, ctx: &NodeContext<'_>, out: &mut Merged) {
    let s = ctx.state;
    let (Some(pod), Some(ip)) = (s.pod(key), s.policy_ip(key)) else {
        return;
    };
    if pod.node != *ctx.node.name {
        return;
    }
    let t = table(d);
    let cookie = ids::policy_target_cookie(d, ip);
    let own = match d {
        Direction::Ingress => Field::Ipv4Dst,
        Direction::Egress => Field::Ipv4Src,
    };
    let base = ip_net(own, crate::policy::host(ip));
    let mut isolated = false;
    let mut audited = false;
    for policy in s.policies_selecting(key) {
        let Some(rules) = policy.rules(d) else {
            continue;
        };
        isolated = true;
        audited |= policy.audit;
        for (i, rule) in rules.iter().enumerate() {
            let rk = RuleKey {
                policy: policy.key.clone(),
                direction: d,
                index: i as u16,
            };
            let Some(id) = s.conj_id(&rk) else {
                continue;
            };
            let n = clauses(rule, d);
            let matches = match d {
                Direction::Ingress => {
                    with_ports(base.clone(), rule.ports.as_deref(), Some(pod), None)
                }
                Direction::Egress => vec![base.clone()],
            };
            for m in matches {
                if n == 1 {
                    // An audited direct allow names its rule (its cookie is the rule's), as
                    // a conj_id flow does: the controller logs which rule allowed.
                    let (c, a) = if policy.audit {
                        (ids::policy_rule_cookie(id), true)
                    } else {
                        (cookie, false)
                    };
                    out.other(t, PRIORITY_DIRECT, c, m, Kind::Allow(next(d), a));
                } else {
                    out.conj(t, cookie, m, id, 1, n);
                }
            }
        }
    }
    if isolated {
        out.other(t, PRIORITY_ISOLATED, cookie, base, Kind::Drop(audited));
    }
}

fn peer(d: Direction, net: Ipv4Net, ctx: &NodeContext<'_>, out: &mut Merged) {
    let s = ctx.state;
    let t = table(d);
    let cookie = ids::policy_peer_cookie(d, net);
    let field = match d {
        Direction::Ingress => Field::Ipv4Src,
        Direction::Egress => Field::Ipv4Dst,
    };
    let base = ip_net(field, net);
    // The pod at this address, if it is one of the rule's peer pods.
    let pod_key = (net.prefix_len() == 32)
        .then(|| s.pod_at(net.network()))
        .flatten();
    let pod = pod_key.and_then(|k| s.pod(k));
    let mut rules: Vec<(RuleKey, bool)> = s
        .rules_naming_block(&net)
        .map(|r| (r.clone(), false))
        .collect();
    if let Some(k) = pod_key {
        rules.extend(s.rules_naming_pod(k).map(|r| (r.clone(), true)));
    }
    for (rk, as_pod) in rules {
        if rk.direction != d || !s.policy_on(&rk.policy, &ctx.node.name) {
            continue;
        }
        let (Some(rule), Some(id)) = (s.rule(&rk), s.conj_id(&rk)) else {
            continue;
        };
        let n = clauses(rule, d);
        if n < 2 {
            continue;
        }
        let matches = match d {
            Direction::Ingress => vec![base.clone()],
            Direction::Egress => {
                // An egress rule without `to`: its numeric ports go to 0.0.0.0/0, its named
                // ports to each pod that has them.
                let named_only = rule.peers.is_none().then_some(as_pod);
                let dest = if as_pod { pod.map(|p| &**p) } else { None };
                with_ports(base.clone(), rule.ports.as_deref(), dest, named_only)
            }
        };
        for m in matches {
            out.conj(t, cookie, m, id, 2, n);
        }
    }
}

#[cfg(test)]
mod tests;
