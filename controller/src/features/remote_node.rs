//! Remote nodes: another node's pod CIDR goes through the tunnel to its InternalIP.
//! Owner: [`Owner::RemoteNode`](super::Owner::RemoteNode); one flow per other node.
//!
//! The flow depends on the remote node alone (the receiving node rewrites both MACs before
//! it delivers to its pod), so it is the same on every node that has it: agents compute it
//! once per remote node and share it (see `agent::SharedFlows`).

use super::*;
use crate::ids;
use crate::pipeline::*;

/// The tables this feature writes.
pub const TABLES: &[Table] = &[Table::L3Forwarding];

/// The flow, on any other node, that reaches `remote`'s pods.
pub fn flows(remote: &NodeModel, flows: &mut Vec<Flow>) {
    let c = ids::remote_node_cookie(remote.pod_cidr);
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
                set_mac(Field::EthDst, TUNNEL_PEER_MAC),
                Action::SetField(MatchField::ipv4(Field::TunDst, remote.internal_ip)),
            ]),
            goto(Table::L2ForwardingCalc),
        ],
    ));
}
