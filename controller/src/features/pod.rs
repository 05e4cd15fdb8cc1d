//! Pod connectivity: a local pod's classification, spoof guard, ARP answer and
//! forwarding, and its Service hairpin mark. Owner: [`Owner::Pod`](super::Owner::Pod); seven
//! flows per pod.

use super::*;
use crate::ids;
use crate::pipeline::*;

/// The tables this feature writes.
pub const TABLES: &[Table] = &[
    Table::Classifier,
    Table::SpoofGuard,
    Table::ArpResponder,
    Table::L3Forwarding,
    Table::L2ForwardingCalc,
    Table::ConntrackCommit,
];

/// The seven flows of one attached pod.
pub fn flows(node: &NodeModel, pod: &LocalPod, flows: &mut Vec<Flow>) {
    let c = ids::pod_cookie(pod.ip);
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
            MatchField::mac(Field::EthSrc, pod.mac.octets()),
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
            MatchField::mac(Field::EthSrc, pod.mac.octets()),
            eth_type(ETH_TYPE_ARP),
            MatchField::ipv4(Field::ArpSpa, pod.ip),
            MatchField::mac(Field::ArpSha, pod.mac.octets()),
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
        matching([MatchField::mac(Field::EthDst, pod.mac.octets())]),
        vec![
            apply(vec![set_reg(REG_OUT_PORT, pod.ofport)]),
            goto(Table::IngressRule),
        ],
    ));
    // A Service connection of this pod that landed on itself (hairpin).
    flows.push(super::service::hairpin_flow(pod.ip, c));
}
