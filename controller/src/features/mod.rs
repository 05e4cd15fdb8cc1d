//! Features: the flows of the pipeline, computed per owner. A pure layer: no I/O, no clock,
//! no randomness, so the same inputs give the same flows and an unchanged cluster never
//! rewrites a flow.
//!
//! Owns: which flows br-int of a node must hold, split by who they are for. Every flow has
//! one [`Owner`]; a feature computes the flows of one owner on one node from the state
//! [`Snapshot`] alone, so a node agent recomputes exactly the owners a change set marks
//! dirty, never the whole node. Features and what they write:
//!
//! | feature | owner | tables |
//! |---|---|---|
//! | [`skeleton`] | [`Owner::Pipeline`] | every table's default; tunnel classification; ct; L2 to the tunnel; Output |
//! | [`gateway`] | [`Owner::Gateway`] | Classifier, ArpResponder (gateway IP; the remote-pods next hop), L3Forwarding, L2ForwardingCalc |
//! | [`pod`] | [`Owner::Pod`] | Classifier, SpoofGuard, ArpResponder, L3Forwarding, L2ForwardingCalc |
//! | [`remote_node`] | [`Owner::RemoteNode`] | L3Forwarding |
//! | [`policy`] | [`Owner::PolicyBase`], [`Owner::Policy`] | EgressRule, IngressRule |
//! | [`service`] | [`Owner::ServiceBase`], [`Owner::Service`] | Conntrack, ServiceLb, EndpointDnat, SessionAffinity, L3Forwarding, ConntrackCommit, Output; select groups |
//!
//! Does not own: sending flows (see `realise`) or the meaning of tables, registers and
//! cookies (see `pipeline`, `ids` and docs/pipeline.md).
//!
//! Every flow is built from typed values whose widths are fixed here (a MAC is six bytes, an
//! IPv4 address four), so building a match cannot fail on user input; the `expect`s guard
//! this module's own invariants only.

pub mod gateway;
pub mod pod;
pub mod policy;
pub mod remote_node;
pub mod service;
pub mod skeleton;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use openflow::action::{Ct, CtZone};
use openflow::{Action, Field, Instruction, Match, MatchField, Subfield, port};

use crate::ipam::mac_for;
use crate::model::NodeModel;
use crate::pipeline::Table;
use crate::source::ObjectKey;
use crate::state::Snapshot;
use switchyard_mac::Mac;

/// A flow as a feature wants it on the switch.
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

/// Who a flow on one node's br-int is for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Owner {
    /// The pipeline skeleton, the same on every node.
    Pipeline,
    /// This node's gateway port.
    Gateway,
    /// A pod of this node (shared: an owner is kept per flow table entry's owner index).
    Pod(Arc<ObjectKey>),
    /// Another node, whose pod CIDR is reached through the tunnel (its name, shared with the
    /// state's node model: a thousand agents hold this owner once each).
    RemoteNode(Arc<str>),
    /// NetworkPolicy's fixed flows (conntrack bypass, the node's own traffic).
    PolicyBase,
    /// NetworkPolicy flows: a selected pod's, a rule's, or a peer address's.
    Policy(crate::state::PolicyOwner),
    /// The Service feature's fixed flows (hairpin).
    ServiceBase,
    /// A Service: its ports' flows and groups, the same on every node.
    Service(Arc<ObjectKey>),
}

/// What a feature may read to compute one owner's flows on one node.
#[derive(Clone, Copy, Debug)]
pub struct NodeContext<'a> {
    /// The node being computed.
    pub node: &'a NodeModel,
    /// The whole network state.
    pub state: &'a Snapshot,
    /// The OpenFlow port of each interface on the node's br-int, as vswitchd reports it.
    pub ofports: &'a HashMap<String, u32>,
}

/// The flows of `owner` on the context's node (none for an owner that has no flows there:
/// a pod not attached yet or without an ofport, a node that is gone).
pub fn owner_flows(owner: &Owner, ctx: &NodeContext<'_>) -> Vec<Flow> {
    let mut flows = Vec::new();
    match owner {
        Owner::Pipeline => skeleton::flows(&mut flows),
        Owner::Gateway => gateway::flows(ctx.node, &mut flows),
        Owner::Pod(key) => {
            if let Some(pod) = local_pod(ctx, key) {
                pod::flows(ctx.node, &pod, &mut flows);
            }
        }
        Owner::RemoteNode(name) => {
            if let Some(remote) = ctx.state.node(name)
                && remote.name != ctx.node.name
            {
                remote_node::flows(remote, &mut flows);
            }
        }
        Owner::PolicyBase => policy::base_flows(ctx.node, &mut flows),
        Owner::Policy(p) => policy::flows(p, ctx, &mut flows),
        Owner::ServiceBase => service::base_flows(ctx.node, &mut flows),
        Owner::Service(key) => {
            if let Some(svc) = ctx.state.service(key) {
                service::flows(svc, &mut flows);
                service::node_flows(svc, ctx.node, &mut flows);
            }
        }
    }
    flows
}

/// The flows, groups and meters of `owner` on the context's node.
pub fn owner_parts(owner: &Owner, ctx: &NodeContext<'_>) -> crate::realise::Parts {
    let mut parts = crate::realise::Parts::from(owner_flows(owner, ctx));
    if let Owner::Service(key) = owner
        && let Some(svc) = ctx.state.service(key)
    {
        parts.groups = service::groups(svc);
        parts.groups.extend(service::node_groups(svc, ctx.node));
    }
    parts
}

/// Every owner that has (or may have) flows on the context's node.
pub fn node_owners(ctx: &NodeContext<'_>) -> Vec<Owner> {
    let mut owners = vec![Owner::Pipeline, Owner::Gateway];
    owners.extend(
        ctx.state
            .pods_on(&ctx.node.name)
            .map(|k| Owner::Pod(Arc::new(k.clone()))),
    );
    owners.extend(
        ctx.state
            .nodes()
            .filter(|n| n.name != ctx.node.name)
            .map(|n| Owner::RemoteNode(n.name.clone())),
    );
    owners.push(Owner::PolicyBase);
    owners.extend(policy_owners(ctx));
    owners.push(Owner::ServiceBase);
    owners.extend(
        ctx.state
            .services()
            .map(|s| Owner::Service(Arc::new(s.key.clone()))),
    );
    owners
}

/// The policy owners of the context's node: each local pod a policy selects (both
/// directions), and each rule of the policies selecting a local pod with every address its
/// peers name.
fn policy_owners(ctx: &NodeContext<'_>) -> Vec<Owner> {
    use crate::policy::Direction;
    use crate::state::{PolicyOwner, RuleKey};
    let s = ctx.state;
    let mut owners = std::collections::BTreeSet::new();
    for policy in s.policies_on(&ctx.node.name) {
        for pod in s.policy_targets(&policy.key) {
            if s.pod(pod).is_some_and(|p| p.node == *ctx.node.name) {
                for d in Direction::BOTH {
                    owners.insert(PolicyOwner::Target(d, Arc::new(pod.clone())));
                }
            }
        }
        for d in Direction::BOTH {
            for i in 0..policy.rules(d).map_or(0, |r| r.len()) {
                let rule = RuleKey {
                    policy: policy.key.clone(),
                    direction: d,
                    index: i as u16,
                };
                for net in s.rule_peer_nets(&rule) {
                    owners.insert(PolicyOwner::Peer(d, net));
                }
                owners.insert(PolicyOwner::Rule(Arc::new(rule)));
            }
        }
    }
    owners.into_iter().map(Owner::Policy).collect()
}

/// A pod attached to this node's br-int with a known ofport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalPod {
    /// Namespace/name.
    pub key: ObjectKey,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its interface's MAC.
    pub mac: Mac,
    /// Its OpenFlow port on br-int.
    pub ofport: u32,
}

fn local_pod(ctx: &NodeContext<'_>, key: &ObjectKey) -> Option<LocalPod> {
    let pod = ctx.state.pod(key)?;
    if pod.node != *ctx.node.name {
        return None;
    }
    let port = ctx.state.attachment(key)?;
    Some(LocalPod {
        key: key.clone(),
        ip: port.ip,
        mac: port.mac,
        ofport: *ctx.ofports.get(&port.iface)?,
    })
}

/// The node's whole pipeline, sorted by (table, priority descending, cookie): every owner's
/// flows. For tests, tools and the first realisation of a switch.
pub fn node_flows(ctx: &NodeContext<'_>) -> Vec<Flow> {
    let mut flows: Vec<Flow> = node_owners(ctx)
        .iter()
        .flat_map(|o| owner_flows(o, ctx))
        .collect();
    flows.sort_by(|a, b| {
        (a.table, std::cmp::Reverse(a.priority), a.cookie).cmp(&(
            b.table,
            std::cmp::Reverse(b.priority),
            b.cookie,
        ))
    });
    flows
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

/// The MAC of a node's gateway port.
pub fn gateway_mac(node: &NodeModel) -> Mac {
    mac_for(node.gateway_ip())
}

pub(crate) fn matching(fields: impl IntoIterator<Item = MatchField>) -> Match {
    let mut m = Match::new();
    for f in fields {
        m.insert(f)
            .expect("compiler builds fields of the right width");
    }
    m
}

pub(crate) fn goto(table: Table) -> Instruction {
    Instruction::GotoTable(table.id())
}

pub(crate) fn apply(actions: Vec<Action>) -> Instruction {
    Instruction::ApplyActions(actions)
}

pub(crate) fn set_reg(reg: u8, value: u32) -> Action {
    Action::SetField(MatchField::u32(Field::Reg(reg), value))
}

pub(crate) fn set_mac(field: Field, mac: Mac) -> Action {
    Action::SetField(MatchField::mac(field, mac.octets()))
}

pub(crate) fn eth_type(t: u16) -> MatchField {
    MatchField::u16(Field::EthType, t)
}

pub(crate) fn flow(
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

/// ct_state bits (nicira-ext.h / meta-flow.h CS_*).
pub(crate) const CT_NEW: u32 = 0x01;
pub(crate) const CT_INV: u32 = 0x10;
pub(crate) const CT_TRK: u32 = 0x20;

/// The OVS ARP responder: turn the request into a reply from `mac`/`ip` and send it back
/// out of the port it came in on.
pub(crate) fn arp_reply(mac: Mac, ip: Ipv4Addr) -> Vec<Action> {
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

pub(crate) fn arp_request_for(ip: Ipv4Addr) -> Match {
    matching([
        eth_type(ETH_TYPE_ARP),
        MatchField::u16(Field::ArpOp, ARP_REQUEST),
        MatchField::ipv4(Field::ArpTpa, ip),
    ])
}

#[cfg(test)]
mod tests;
