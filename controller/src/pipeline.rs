//! The br-int pipeline's vocabulary: tables, registers, fixed ports, MACs and cookies.
//!
//! Owns: every number the flows share, by name. docs/pipeline.md describes the same
//! things for operators; keep the two in step. Does not own: the flows themselves
//! (see `compiler`).

use switchyard_mac::Mac;

/// The pipeline's tables, in the order a packet visits them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// By in_port: pod port, tunnel or gateway; marks reg0 with the source class.
    Classifier,
    /// A pod port must send its own MAC and IP (ARP too).
    SpoofGuard,
    /// Answers ARP for the gateway and for local pods; drops other ARP.
    ArpResponder,
    /// Sends IP through conntrack (the node's zone), then to ConntrackState.
    Conntrack,
    /// Drops +inv; later issues let est/rel bypass policy here.
    ConntrackState,
    /// Service load balancing: new connections to a Service port go to its select group,
    /// whose bucket DNATs them to an endpoint and commits them in conntrack.
    ServiceLb,
    /// Endpoint DNAT for ports with session affinity (the endpoint a bucket or a learned
    /// flow loaded: learn, DNAT, commit) and the dispatch to one of a port's several groups.
    EndpointDnat,
    /// Session affinity (`sessionAffinity: ClientIP`): flows learned from EndpointDnat
    /// (client, Service port → endpoint); reached by resubmit from ServiceLb only.
    SessionAffinity,
    /// NetworkPolicy egress rules: a later issue fills it.
    EgressRule,
    /// Routing: local pod (MAC rewrite), remote node's pod CIDR (tunnel), gateway.
    L3Forwarding,
    /// Destination MAC → output port in reg1.
    L2ForwardingCalc,
    /// NetworkPolicy ingress rules: a later issue fills it.
    IngressRule,
    /// Commits new connections to conntrack.
    ConntrackCommit,
    /// Outputs to the port in reg1.
    Output,
}

impl Table {
    /// Every table, in pipeline order.
    pub const ALL: [Table; 14] = [
        Table::Classifier,
        Table::SpoofGuard,
        Table::ArpResponder,
        Table::Conntrack,
        Table::ConntrackState,
        Table::ServiceLb,
        Table::EndpointDnat,
        Table::SessionAffinity,
        Table::EgressRule,
        Table::L3Forwarding,
        Table::L2ForwardingCalc,
        Table::IngressRule,
        Table::ConntrackCommit,
        Table::Output,
    ];

    /// The OpenFlow table id.
    pub const fn id(self) -> u8 {
        match self {
            Table::Classifier => 0,
            Table::SpoofGuard => 10,
            Table::ArpResponder => 20,
            Table::Conntrack => 30,
            Table::ConntrackState => 31,
            Table::ServiceLb => 40,
            Table::EndpointDnat => 41,
            Table::SessionAffinity => 42,
            Table::EgressRule => 50,
            Table::L3Forwarding => 60,
            Table::L2ForwardingCalc => 70,
            Table::IngressRule => 80,
            Table::ConntrackCommit => 90,
            Table::Output => 100,
        }
    }

    /// The name written to OVSDB `Flow_Table`, which `ovs-ofctl dump-flows --names` prints.
    pub const fn name(self) -> &'static str {
        match self {
            Table::Classifier => "Classifier",
            Table::SpoofGuard => "SpoofGuard",
            Table::ArpResponder => "ArpResponder",
            Table::Conntrack => "Conntrack",
            Table::ConntrackState => "ConntrackState",
            Table::ServiceLb => "ServiceLb",
            Table::EndpointDnat => "EndpointDnat",
            Table::SessionAffinity => "SessionAffinity",
            Table::EgressRule => "EgressRule",
            Table::L3Forwarding => "L3Forwarding",
            Table::L2ForwardingCalc => "L2ForwardingCalc",
            Table::IngressRule => "IngressRule",
            Table::ConntrackCommit => "ConntrackCommit",
            Table::Output => "Output",
        }
    }

    /// The table with this id, if it is one of ours.
    pub fn from_id(id: u8) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.id() == id)
    }
}

/// reg0 holds the packet's source class, set by the Classifier.
pub const REG_SOURCE_CLASS: u8 = 0;
/// reg1 holds the output port, set by L2ForwardingCalc and read by Output.
pub const REG_OUT_PORT: u8 = 1;

/// reg3 holds the endpoint of a new connection to a Service port with session affinity (its
/// IPv4 address; loaded by the group's bucket or a learned SessionAffinity flow), read by
/// EndpointDnat and its `learn`. Ports without affinity DNAT in the bucket and leave it.
pub const REG_ENDPOINT_IP: u8 = 3;
/// reg4 holds that endpoint's DNAT port (bits 0..15), as reg3.
pub const REG_ENDPOINT_PORT: u8 = 4;
/// reg5 holds the Service port id (see `state::service`) of a new connection to a
/// Service, set by ServiceLb and read by EndpointDnat.
pub const REG_SERVICE_PORT: u8 = 5;

/// reg6 holds a new Service connection's flags, set by ServiceLb and copied into its
/// ct_mark by the DNAT (a group bucket's, or EndpointDnat's): bit 0 ([`SERVICE_FLAG_SNAT`]) = SNAT it to the node's gateway
/// address.
pub const REG_SERVICE_FLAGS: u8 = 6;
/// [`REG_SERVICE_FLAGS`] bit 0: the connection came from outside the pod network to a
/// NodePort, externalIP or LoadBalancer IP under `externalTrafficPolicy: Cluster` (or from
/// the node itself): SNAT it so that the endpoint's replies come back through this node.
pub const SERVICE_FLAG_SNAT: u32 = 0x1;
/// [`REG_SERVICE_FLAGS`] bit 1: the connection takes a Local traffic policy's path (the
/// node's own endpoints): its affinity is learned apart from the cluster-wide path's, and a
/// miss or a slot goes to the node's local group(s). Not copied into ct_mark.
pub const SERVICE_FLAG_LOCAL: u32 = 0x2;

/// reg7 (bits 0..15) holds which of a large Service port's groups a new connection goes
/// to (`multipath`), read by EndpointDnat.
pub const REG_GROUP_SLOT: u8 = 7;

/// ct_mark bit: the connection was DNATed to a Service endpoint.
pub const CT_MARK_SERVICE: u32 = 0x1;
/// ct_mark bit: a hairpin connection (a pod reached a Service and was chosen as its own
/// endpoint): SNATed to [`HAIRPIN_SNAT_IP`] in [`CT_ZONE_HAIRPIN`], output to in_port.
pub const CT_MARK_HAIRPIN: u32 = 0x2;

/// ct_mark bit: SNAT the connection to the node's gateway address in [`CT_ZONE_SNAT`]
/// (copied from [`REG_SERVICE_FLAGS`] bit 0 when the DNAT commits it).
pub const CT_MARK_SNAT: u32 = 0x4;
/// The bit of [`CT_MARK_SNAT`].
pub const CT_MARK_SNAT_BIT: u16 = 2;

/// Conntrack zone of the NodePort / external SNAT to the gateway address.
pub const CT_ZONE_SNAT: u16 = 65522;
/// Source ports of that SNAT: above Linux's default ephemeral range (32768..=60999), so a
/// SNATed connection does not take the 5-tuple of one the node opens from its gateway
/// address.
pub const SNAT_PORTS: (u16, u16) = (61000, 65535);

/// The address every node's NodePorts are redirected to: `switchyard node-setup` DNATs
/// traffic for the node's own addresses on the NodePort range to it (port kept) and routes
/// it through the gateway; ServiceLb matches it with the nodePort. Link-local, never on a
/// wire (Antrea's 169.254.0.252 plays the same part).
pub const NODE_PORT_VIP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(169, 254, 169, 253);
/// kube-apiserver's default `--service-node-port-range`.
pub const DEFAULT_NODE_PORT_RANGE: (u16, u16) = (30000, 32767);

/// The top byte of the group id of a Service port's node-local endpoints (Local traffic
/// policies) when they fit one group: `ID | 0xFE << 24`. Chained groups of big ports use
/// 1..=[`MAX_GROUP_SLOTS`] (cluster-wide) and [`LOCAL_SLOT_BASE`]`..` (local).
pub const LOCAL_GROUP_SLOT: u32 = 0xFE;
/// Most groups one Service port's cluster-wide endpoints are dealt over (top bytes
/// 1..=127 of their group ids); likewise for its local endpoints on one node (top bytes
/// [`LOCAL_SLOT_BASE`]..=0xFD, at most 126).
pub const MAX_GROUP_SLOTS: usize = 127;
/// The top byte of the first of the local groups of a port whose local endpoints need
/// several: `ID | (0x80 + k) << 24`.
pub const LOCAL_SLOT_BASE: u32 = 0x80;

/// The source address a hairpin connection is SNATed to, so that the pod does not receive
/// packets from its own address (Linux drops those as martians). Link-local, never on a wire.
pub const HAIRPIN_SNAT_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(169, 254, 169, 252);

/// Conntrack zone of the hairpin SNAT (a connection cannot be DNATed and SNATed by one
/// commit, so the SNAT has a zone of its own).
pub const CT_ZONE_HAIRPIN: u16 = 65521;

/// The meter that bounds packet-ins of connections refused for want of an endpoint: the
/// node agent installs it when br-int connects (OVS takes no meter_mod inside a bundle).
pub const REJECT_METER_ID: u32 = 1;
/// Its rate (packets per second) and burst: beyond these, refused clients time out instead.
pub const REJECT_METER_PPS: u32 = 200;
/// Its burst size (packets).
pub const REJECT_METER_BURST: u32 = 200;

/// The meter that bounds the packet-ins of NetworkPolicy audit logging (`crate::audit`):
/// its rate and burst are the controller's `--policy-audit-rate` and
/// `--policy-audit-burst`; the node agent installs it when br-int connects.
pub const AUDIT_METER_ID: u32 = 2;
/// Bytes of each audited packet sent to the controller: Ethernet, IPv4 with options and
/// the L4 ports fit.
pub const AUDIT_MAX_LEN: u16 = 128;

/// Values of [`REG_SOURCE_CLASS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum SourceClass {
    /// From a local pod's port.
    Pod = 1,
    /// From the tunnel (another node's pod).
    Tunnel = 2,
    /// From the gateway (the node's own stack).
    Gateway = 3,
}

/// ofport requested for the tunnel port (OVSDB `Interface.ofport_request`), so flows can
/// name it before vswitchd reports it.
pub const TUNNEL_OFPORT: u32 = 1;
/// ofport requested for the gateway port.
pub const GATEWAY_OFPORT: u32 = 2;

/// Name of the integration bridge.
pub const BRIDGE: &str = "br-int";
/// Name of the flow-based tunnel port.
pub const TUNNEL_PORT: &str = "sy-tun0";
/// Name of the gateway internal port.
pub const GATEWAY_PORT: &str = "sy-gw0";

/// The destination MAC that L3Forwarding gives packets bound for another node; L2 maps it
/// to the tunnel port. Locally administered; never on a wire outside the tunnel.
pub const TUNNEL_PEER_MAC: Mac = Mac::new([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]);

/// The next hop of each node's route to the whole cluster CIDR (`switchyard node-setup`
/// installs `CLUSTER_CIDR via 169.254.0.1 dev sy-gw0 onlink`). A link-local address nobody
/// holds: the gateway feature answers ARP for it, from the gateway port only, with
/// [`TUNNEL_PEER_MAC`], and L3Forwarding tunnels the node's packets by destination pod CIDR.
pub const REMOTE_PODS_NEXT_HOP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(169, 254, 0, 1);

/// Conntrack zone for all pod traffic of a node.
pub const CT_ZONE: u16 = 65520;

/// Encapsulation overhead in bytes, by tunnel type (IPv4 underlay).
pub const fn encap_overhead(encap: Encap) -> u32 {
    match encap {
        Encap::Geneve | Encap::Vxlan => 50,
    }
}

/// The overlay's encapsulation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Encap {
    /// Geneve (UDP 6081), the default.
    #[default]
    Geneve,
    /// VXLAN (UDP 4789).
    Vxlan,
}

impl Encap {
    /// The OVSDB `Interface.type` of the tunnel port.
    pub const fn interface_type(self) -> &'static str {
        match self {
            Encap::Geneve => "geneve",
            Encap::Vxlan => "vxlan",
        }
    }
}

impl std::str::FromStr for Encap {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "geneve" => Ok(Encap::Geneve),
            "vxlan" => Ok(Encap::Vxlan),
            other => Err(format!(
                "unknown encapsulation {other:?}: use geneve or vxlan"
            )),
        }
    }
}

/// What a flow exists for: the top 8 bits of its cookie.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum CookieCategory {
    /// The pipeline's skeleton: table defaults, classifier of fixed ports (owner = 0).
    Pipeline = 1,
    /// This node's gateway (owner = the gateway's IPv4 address).
    Gateway = 2,
    /// A local pod (owner = its IPv4 address).
    Pod = 3,
    /// Another node (owner = the network address of its pod CIDR).
    RemoteNode = 4,
    /// NetworkPolicy's fixed flows: est/rel bypass, the node's own traffic (owner = 0).
    PolicyBase = 5,
    /// A NetworkPolicy rule's `conj_id` flow, and an audited one-clause rule's direct allow
    /// (owner = the conjunction id, which names the policy and rule; the controller logs
    /// the mapping).
    PolicyRule = 6,
    /// A pod's policy flows as a selected pod: clauses, direct allows, default drop
    /// (bit 32 = direction, 1 for egress; owner = the pod's address).
    PolicyTarget = 7,
    /// Peer address clause flows (bit 32 = direction; bits 45..40 = prefix length; owner =
    /// the network address).
    PolicyPeer = 8,
    /// A Service port's flows (owner = the Service port id, which is also its group id; see
    /// `state::service`).
    Service = 9,
    /// The Service feature's fixed flows: hairpin SNAT and output (owner = 0).
    ServiceBase = 10,
    /// Session affinity flows the switch learned (owner = the Service port id). The switch
    /// makes and expires them: the realiser leaves them alone.
    ServiceAffinity = 11,
}

impl CookieCategory {
    /// The category encoded in a cookie, if it is one of ours.
    pub fn of(cookie: u64) -> Option<CookieCategory> {
        match (cookie >> 56) as u8 {
            1 => Some(CookieCategory::Pipeline),
            2 => Some(CookieCategory::Gateway),
            3 => Some(CookieCategory::Pod),
            4 => Some(CookieCategory::RemoteNode),
            5 => Some(CookieCategory::PolicyBase),
            6 => Some(CookieCategory::PolicyRule),
            7 => Some(CookieCategory::PolicyTarget),
            8 => Some(CookieCategory::PolicyPeer),
            9 => Some(CookieCategory::Service),
            10 => Some(CookieCategory::ServiceBase),
            11 => Some(CookieCategory::ServiceAffinity),
            _ => None,
        }
    }
}

/// Cookie layout: bits 63..56 category, 55..32 zero (reserved), 31..0 owner id. The owner
/// ids come from [`crate::ids`]: an IPv4 address the owner holds alone in the cluster (a
/// pod's address, a node's pod CIDR), so two owners can never share a cookie, the same owner
/// gets the same cookie across controller restarts (an unchanged flow is never rewritten),
/// and an operator reads the owner straight from the cookie (`0x030000000af40105` is the pod
/// 10.244.1.5).
pub const fn cookie(category: CookieCategory, owner_id: u32) -> u64 {
    ((category as u64) << 56) | owner_id as u64
}

/// True for the cookie of a flow the switch makes itself (a `learn`): the realiser neither
/// diffs nor removes those.
pub fn switch_made(cookie: u64) -> bool {
    CookieCategory::of(cookie) == Some(CookieCategory::ServiceAffinity)
}

/// The owner id part of a cookie.
pub const fn cookie_owner(cookie: u64) -> u32 {
    cookie as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_ids_are_unique_and_ascending() {
        let ids: Vec<u8> = Table::ALL.iter().map(|t| t.id()).collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(ids, sorted);
        for t in Table::ALL {
            assert_eq!(Table::from_id(t.id()), Some(t));
        }
    }

    #[test]
    fn cookies_carry_category_and_owner() {
        let c = cookie(CookieCategory::Pod, 0x0af4_0105);
        assert_eq!(c, 0x0300_0000_0af4_0105);
        assert_eq!(CookieCategory::of(c), Some(CookieCategory::Pod));
        assert_eq!(cookie_owner(c), 0x0af4_0105);
    }
}
