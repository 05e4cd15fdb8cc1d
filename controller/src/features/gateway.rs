//! The node's gateway port (`sy-gw0`): the node's own stack reaches its pods through it,
//! and every other node's pods (its route to the cluster CIDR goes via
//! [`REMOTE_PODS_NEXT_HOP`], which only this feature answers ARP for; see `node_setup`).
//! Pods reach the node's stack — its own address, other nodes, the outside — through it too:
//! their default route is the gateway, and L2ForwardingCalc sends the gateway MAC here.
//! Owner: [`Owner::Gateway`](super::Owner::Gateway); five flows per node.

use super::*;
use crate::ids;
use crate::pipeline::*;

/// The tables this feature writes.
pub const TABLES: &[Table] = &[
    Table::Classifier,
    Table::ArpResponder,
    Table::L3Forwarding,
    Table::L2ForwardingCalc,
];

/// The gateway's flows on its node.
pub fn flows(node: &NodeModel, flows: &mut Vec<Flow>) {
    let c = ids::gateway_cookie(node.gateway_ip());
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
    // The node's route to the cluster CIDR names a next hop nobody holds; answering its ARP
    // with the tunnel peer MAC lets the node's packets to remote pods enter L3Forwarding like
    // a pod's, where the remote node's flow tunnels them. Only from the gateway port.
    let mut next_hop = arp_request_for(REMOTE_PODS_NEXT_HOP);
    next_hop
        .insert(MatchField::u32(Field::InPort, GATEWAY_OFPORT))
        .expect("in_port is a 32-bit field");
    flows.push(flow(
        Table::ArpResponder,
        PRIORITY_NORMAL,
        c,
        next_hop,
        vec![apply(arp_reply(TUNNEL_PEER_MAC, REMOTE_PODS_NEXT_HOP))],
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
        matching([MatchField::mac(Field::EthDst, gw_mac.octets())]),
        vec![
            apply(vec![set_reg(REG_OUT_PORT, GATEWAY_OFPORT)]),
            goto(Table::IngressRule),
        ],
    ));
}
