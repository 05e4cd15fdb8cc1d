//! Packet trace: one packet run through a node's installed pipeline, as ovs-vswitchd would
//! run it, with every table visited, the flow that matched and who owns it, and a verdict
//! named in Kubernetes terms.
//!
//! Owns: the model of OVS's OpenFlow 1.3 lookup and the actions the pipeline uses (the
//! `engine` submodule), the two packet syntaxes (an `ovs-ofctl` microflow, or
//! `from=NS/POD to=NS/POD|IP port=N/PROTO [sport=N]` resolved from the state), and the explanations.
//! Pure: the caller hands in the node's flows and groups (a live dump), its attached pods
//! and a state snapshot; nothing here talks to a switch.
//!
//! Does not own: getting the flows (the agent's connection, or `ovs-ofctl dump-flows`), nor
//! serving the answer (the admin API). `tests/tests/trace_agrees.rs` checks the table path
//! and verdict against `ovs-appctl ofproto/trace` on real OVS.
//!
//! What is modelled, what is not (docs/operations.md, "Packet trace", says the same for
//! operators): per table the highest-priority matching flow, masks, `conjunction` /
//! `conj_id` as OVS's classifier evaluates them, OpenFlow 1.3 table-miss (drop); apply and
//! write actions, `goto_table`, `resubmit`, `set_field`/`load`/`move`, `output` (also
//! `IN_PORT` and from a register), groups (`select` as OVS's dp_hash method picks, for a
//! given `dp_hash` or the first bucket otherwise, and over 256 hash values as its default
//! method picks; see `engine`), `ct` for a *new* connection
//! only (after `ct(table=T)` the packet is `+trk+new` in table T, with the `ct`'s
//! `nat(src|dst=...)` applied and, with `commit`, its `ct_mark`), `learn` shown with the flow
//! it would add (not added: the first connection), `multipath` (the link OVS computes from
//! the packet, `ovs_hash`),
//! `controller` (a Service without endpoints: refused). Meters, queues and MPLS are not
//! modelled.

mod engine;
mod explain;
mod ovs_hash;
mod packet;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::agent::InstalledPod;
use crate::source::ObjectKey;
use crate::state::Snapshot;

/// What a trace reads: one node's state as the controller knows it and as the switch holds
/// it.
#[derive(Clone, Copy, Debug)]
pub struct TraceInput<'a> {
    /// The node whose br-int the packet enters.
    pub node: &'a str,
    /// Pods, nodes and policies.
    pub snapshot: &'a Snapshot,
    /// The node's attached pods, with their ofports.
    pub pods: &'a BTreeMap<ObjectKey, InstalledPod>,
    /// The node's installed flows (a live dump).
    pub flows: &'a [openflow::FlowStats],
    /// The node's groups (may be empty).
    pub groups: &'a [openflow::GroupDesc],
}

/// The result of a trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceReport {
    /// The packet as traced, resolved to an `ovs-ofctl` microflow (`in_port` as a number,
    /// with the `dp_hash` that makes a select group take the bucket the trace followed):
    /// what to give `ovs-appctl ofproto/trace br-int` to compare.
    pub packet: String,
    /// The Service the packet met, in Kubernetes terms (`Service default/web port 80/TCP
    /// (10.96.0.10:80) → endpoint default/web-2 10.244.1.3:8080`), if any.
    pub service: Option<String>,
    /// Every table visited, in order (the recirculation after `ct(table=...)` included).
    pub steps: Vec<TraceStep>,
    /// Where the packet ends up.
    pub verdict: Verdict,
    /// The verdict in a sentence, in Kubernetes terms.
    pub explanation: String,
    /// What the model assumed or could not follow (conntrack, group hashing...).
    pub notes: Vec<String>,
}

/// One table visit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceStep {
    /// The table id.
    pub table: u8,
    /// Its name (`L3Forwarding`), or the number for a table the pipeline does not name.
    pub table_name: String,
    /// The flow that matched, as `ovs-ofctl dump-flows --names --no-stats` prints it; on a
    /// table miss, a sentence saying so.
    pub flow: String,
    /// Who owns the flow, from its cookie: `pod x/a`, `node node-2`, `policy y/deny-all
    /// ingress rule 0`, `pipeline`...
    pub owner: String,
    /// What the flow did: registers, fields and conntrack state set, outputs, drop.
    pub effects: Vec<String>,
}

/// Where a traced packet ends up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Sent out of a port of br-int (a pod, the gateway, back out of its in_port for an ARP
    /// reply, or a reserved port such as CONTROLLER).
    Output {
        /// The OpenFlow port.
        port: u32,
        /// Its name (interface name, or the reserved port's name).
        name: String,
    },
    /// Sent through the tunnel to another node.
    Tunnel {
        /// The node whose InternalIP is the tunnel destination (the address when no node
        /// has it).
        node: String,
        /// The tunnel destination.
        remote_ip: Ipv4Addr,
    },
    /// Dropped.
    Drop {
        /// Why, in Kubernetes terms.
        reason: String,
    },
    /// Sent to br-int's LOCAL port.
    Local,
    /// Sent to the controller, which refuses the connection (TCP RST, ICMP port
    /// unreachable): a Service port without a usable endpoint.
    Refused {
        /// Which Service, in Kubernetes terms.
        reason: String,
    },
}

/// Why a trace could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceError {
    /// The node is not in the state.
    #[error("node {0:?} is not in the cluster (known nodes: {1})")]
    UnknownNode(String, String),
    /// The node's switch holds no flows, so there is nothing to trace through.
    #[error("node {0}'s br-int holds no flows: its switch is not connected or not realised yet")]
    NoFlows(String),
    /// The packet text does not parse.
    #[error("packet {packet:?}: {reason}")]
    Syntax {
        /// The packet as given.
        packet: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `in_port=` names no port of the node's br-int.
    #[error("in_port={value}: no such port on node {node}'s br-int (ports: {known})")]
    UnknownPort {
        /// The value given.
        value: String,
        /// The node.
        node: String,
        /// The ports it has, `name=ofport`.
        known: String,
    },
    /// A pod named in the packet is not in the state.
    #[error("pod {0} is not in the cluster (or not scheduled to a node)")]
    UnknownPod(ObjectKey),
    /// A pod named in the packet has no address yet.
    #[error("pod {0} has no address yet: CNI ADD has not attached it")]
    NoAddress(ObjectKey),
    /// `to=service:NS/NAME` names no Service the proxy programs.
    #[error(
        "Service {0} is not in the cluster, or is one the proxy does not program (headless, ExternalName, another service-proxy-name)"
    )]
    UnknownService(ObjectKey),
    /// `port=` is not a port of the Service, or is missing where the Service has several.
    #[error("Service {service}: {reason} (its ports: {ports})")]
    NoServicePort {
        /// The Service.
        service: ObjectKey,
        /// What is wrong with `port=`.
        reason: String,
        /// Its ports, `80/TCP (http)`.
        ports: String,
    },
    /// A pod given as the source on its own node has no port on that node's br-int.
    #[error(
        "pod {pod} is not attached to node {node}'s br-int (no ofport): CNI ADD has not completed there"
    )]
    NotAttached {
        /// The pod.
        pod: ObjectKey,
        /// The node.
        node: String,
    },
}

/// Runs `packet` through the node's installed flows (see the module documentation for the
/// syntax and what is modelled).
pub fn trace(input: &TraceInput<'_>, packet: &str) -> Result<TraceReport, TraceError> {
    let node = input.snapshot.node(input.node).ok_or_else(|| {
        let known: Vec<&str> = input.snapshot.nodes().map(|n| &*n.name).collect();
        TraceError::UnknownNode(input.node.to_owned(), known.join(", "))
    })?;
    if input.flows.is_empty() {
        return Err(TraceError::NoFlows(input.node.to_owned()));
    }
    let ctx = explain::Context::new(input, node);
    let (parsed, dp_hash) = packet::parse(packet, &ctx)?;
    let run = engine::run(&ctx, &parsed, dp_hash);
    let (verdict, explanation, mut notes) = ctx.verdict(&parsed, &run);
    notes.extend(run.notes.iter().cloned());
    let mut text = microflow_text(&parsed);
    if let Some(h) = run.dp_hash {
        text = format!("dp_hash={h:#x},{text}");
    }
    Ok(TraceReport {
        packet: text,
        service: ctx.service_step(&run).map(|s| s.text),
        steps: run.steps,
        verdict,
        explanation,
        notes,
    })
}

/// The packet as a microflow `ofproto/trace` reads back: `format_match` prints the L4 ports
/// of UDP and SCTP as `tp_src`/`tp_dst` (as OVS's `match_format` does), but OVS's exact-flow
/// parser takes `tp_*` for TCP only ("prerequisites not met for setting tp_src").
fn microflow_text(m: &openflow::Match) -> String {
    let text = openflow::text::format_match(m, 32768);
    let proto = m.get(openflow::Field::IpProto).map(|f| f.value_u128());
    let prefix = match proto {
        Some(17) => "udp",
        Some(132) => "sctp",
        _ => return text,
    };
    text.split(',')
        .map(|item| match item.split_once('=') {
            Some(("tp_src", v)) => format!("{prefix}_src={v}"),
            Some(("tp_dst", v)) => format!("{prefix}_dst={v}"),
            _ => item.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}
