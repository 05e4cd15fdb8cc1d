//! Names and reasons: ports, tables and flow owners in the pipeline's and Kubernetes'
//! terms, and the verdict of a run in a sentence.

use std::net::Ipv4Addr;

use openflow::{Field, FlowStats, Match, port};

use super::engine::{Out, Packet, Run, Visit, get};
use super::{TraceError, TraceInput, Verdict};
use crate::ipam::mac_for;
use crate::model::NodeModel;
use crate::pipeline::{
    CookieCategory, GATEWAY_OFPORT, GATEWAY_PORT, REG_SOURCE_CLASS, REJECT_METER_ID, SourceClass,
    TUNNEL_OFPORT, TUNNEL_PEER_MAC, TUNNEL_PORT, Table, cookie_owner,
};
use crate::policy::Direction;
use crate::source::ObjectKey;
use crate::state::RuleKey;

const RESERVED_PORTS: [(&str, u32); 8] = [
    ("IN_PORT", port::IN_PORT),
    ("TABLE", port::TABLE),
    ("NORMAL", port::NORMAL),
    ("FLOOD", port::FLOOD),
    ("ALL", port::ALL),
    ("CONTROLLER", port::CONTROLLER),
    ("LOCAL", port::LOCAL),
    ("ANY", port::ANY),
];

/// The Service a traced packet met, in Kubernetes terms.
pub(super) struct ServiceStep {
    /// `Service default/web port 80/TCP (10.96.0.10:80) → endpoint default/web-2
    /// 10.244.1.3:8080`.
    pub text: String,
    /// Why the Service refuses the connection, `Service default/web port 80/TCP has no
    /// usable endpoint`, when it does.
    pub refused: Option<String>,
}

/// What every explanation reads: the input, the node, and the names of its tables and ports.
pub(super) struct Context<'a> {
    pub input: &'a TraceInput<'a>,
    pub node: &'a NodeModel,
    names: openflow::text::Names,
}

fn ip(v: u128) -> Ipv4Addr {
    Ipv4Addr::from(v as u32)
}

fn mac_text(v: u128) -> String {
    let b = (v as u64).to_be_bytes();
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[2], b[3], b[4], b[5], b[6], b[7]
    )
}

impl<'a> Context<'a> {
    pub fn new(input: &'a TraceInput<'a>, node: &'a NodeModel) -> Context<'a> {
        let mut names = openflow::text::Names::default();
        for t in Table::ALL {
            names.tables.insert(t.id(), t.name().to_owned());
        }
        names.ports.insert(TUNNEL_OFPORT, TUNNEL_PORT.to_owned());
        names.ports.insert(GATEWAY_OFPORT, GATEWAY_PORT.to_owned());
        for p in input.pods.values() {
            names.ports.insert(p.ofport, p.iface.clone());
        }
        Context { input, node, names }
    }

    pub fn table_name(&self, table: u8) -> String {
        Table::from_id(table).map_or_else(|| table.to_string(), |t| t.name().to_owned())
    }

    pub fn flow_text(&self, f: &FlowStats) -> String {
        openflow::text::format_flow_stats_named(f, false, &self.names)
    }

    pub fn port_name(&self, port: u32) -> String {
        if let Some((n, _)) = RESERVED_PORTS.iter().find(|(_, p)| *p == port) {
            return (*n).to_owned();
        }
        self.names
            .ports
            .get(&port)
            .cloned()
            .unwrap_or_else(|| format!("port {port}, unknown to the controller"))
    }

    /// `in_port=` as a number, a reserved name, an interface name or a pod `NS/NAME`.
    pub fn resolve_port(&self, v: &str) -> Result<u32, TraceError> {
        if let Ok(n) = v.parse::<u32>() {
            return Ok(n);
        }
        if let Some((_, p)) = RESERVED_PORTS
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(v))
        {
            return Ok(*p);
        }
        if let Some((p, _)) = self.names.ports.iter().find(|(_, n)| *n == v) {
            return Ok(*p);
        }
        if let Some((ns, name)) = v.split_once('/')
            && let Some(installed) = self.input.pods.get(&ObjectKey::new(ns, name))
        {
            return Ok(installed.ofport);
        }
        let known: Vec<String> = self
            .names
            .ports
            .iter()
            .map(|(p, n)| format!("{n}={p}"))
            .chain(
                self.input
                    .pods
                    .iter()
                    .map(|(k, p)| format!("{k}={}", p.ofport)),
            )
            .collect();
        Err(TraceError::UnknownPort {
            value: v.to_owned(),
            node: self.node.name.to_string(),
            known: known.join(", "),
        })
    }

    pub fn value_text(&self, field: Field, v: u128) -> String {
        match field {
            Field::EthSrc | Field::EthDst | Field::ArpSha | Field::ArpTha => mac_text(v),
            Field::Ipv4Src
            | Field::Ipv4Dst
            | Field::ArpSpa
            | Field::ArpTpa
            | Field::TunSrc
            | Field::TunDst
            | Field::CtNwSrc
            | Field::CtNwDst => ip(v).to_string(),
            Field::InPort => format!("{v} ({})", self.port_name(v as u32)),
            _ => format!("{v:#x}"),
        }
    }

    fn node_with(&self, pred: impl Fn(&NodeModel) -> bool) -> Option<&NodeModel> {
        self.input.snapshot.nodes().map(|n| &**n).find(|n| pred(n))
    }

    /// The pod holding an address (the policy index, else the attachments of the node whose
    /// pod CIDR holds it).
    fn pod_by_ip(&self, addr: Ipv4Addr) -> Option<ObjectKey> {
        let s = self.input.snapshot;
        if let Some(k) = s.pod_at(addr) {
            return Some(k.clone());
        }
        let node = self.node_with(|n| n.pod_cidr.contains(&addr))?;
        s.attachments_on(&node.name)
            .find(|a| a.ip == addr)
            .map(|a| a.pod.clone())
    }

    /// A short name for an address: `x/a`, `the gateway of node n1`, or the address.
    fn short(&self, addr: Ipv4Addr) -> String {
        if let Some(k) = self.pod_by_ip(addr) {
            return k.to_string();
        }
        if let Some(n) = self.node_with(|n| n.gateway_ip() == addr) {
            return format!("node {} ({addr})", n.name);
        }
        addr.to_string()
    }

    /// Where an address is, for explanations.
    fn describe(&self, addr: Ipv4Addr) -> String {
        if let Some(k) = self.pod_by_ip(addr) {
            return format!("pod {k} ({addr})");
        }
        if let Some(n) = self.node_with(|n| n.gateway_ip() == addr) {
            return format!("the gateway of node {} ({addr})", n.name);
        }
        if let Some(n) = self.node_with(|n| n.pod_cidr.contains(&addr)) {
            return format!(
                "{addr}, in node {}'s pod CIDR {} but held by no pod",
                n.name, n.pod_cidr
            );
        }
        format!("{addr}, outside every node's pod CIDR")
    }

    /// Who owns a flow, from its cookie, in Kubernetes terms.
    pub fn owner(&self, cookie: u64) -> String {
        let id = cookie_owner(cookie);
        let addr = Ipv4Addr::from(id);
        let direction = if cookie & (1 << 32) != 0 {
            Direction::Egress
        } else {
            Direction::Ingress
        };
        match CookieCategory::of(cookie) {
            Some(CookieCategory::Pipeline) => "pipeline".into(),
            Some(CookieCategory::Gateway) => match self.node_with(|n| n.gateway_ip() == addr) {
                Some(n) => format!("gateway of node {}", n.name),
                None => format!("gateway {addr} (no node has it)"),
            },
            Some(CookieCategory::Pod) => match self.pod_by_ip(addr) {
                Some(k) => format!("pod {k}"),
                None => format!("pod at {addr} (gone from the state)"),
            },
            Some(CookieCategory::RemoteNode) => {
                match self.node_with(|n| n.pod_cidr.network() == addr) {
                    Some(n) => format!("node {}", n.name),
                    None => format!("node with pod CIDR {addr}/.. (gone from the state)"),
                }
            }
            Some(CookieCategory::PolicyBase) => {
                "policy base (conntrack bypass, the node's own traffic)".into()
            }
            Some(CookieCategory::PolicyRule) => match self.rule_of(id) {
                Some(r) => format!(
                    "policy {} {} rule {}",
                    r.policy,
                    r.direction.field(),
                    r.index
                ),
                None => format!("policy rule with conj_id {id} (unknown to the state)"),
            },
            Some(CookieCategory::PolicyTarget) => match self.pod_by_ip(addr) {
                Some(k) => format!("{} policies of pod {k}", direction.field()),
                None => format!("{} policies of {addr} (no pod)", direction.field()),
            },
            Some(CookieCategory::PolicyPeer) => {
                let len = (cookie >> 40) & 0x3f;
                let who = if len == 32 {
                    self.pod_by_ip(addr)
                        .map(|k| format!(" (pod {k})"))
                        .unwrap_or_default()
                } else {
                    String::new()
                };
                format!("{} peer {addr}/{len}{who}", direction.field())
            }
            Some(CookieCategory::Service) => match self.service_port(id) {
                Some(name) => format!("service {name}"),
                None => format!("service port {id} (unknown to the state)"),
            },
            Some(CookieCategory::ServiceBase) => "service base (hairpin)".into(),
            Some(CookieCategory::ServiceAffinity) => match self.service_port(id) {
                Some(name) => format!("session affinity of service {name} (learned)"),
                None => format!("session affinity of service port {id} (learned)"),
            },
            None => format!("not Switchyard's (cookie {cookie:#x})"),
        }
    }

    /// An endpoint as `default/web-2 10.244.1.3:8080` (the address alone when no pod holds
    /// it).
    pub fn endpoint_text(&self, ip: Ipv4Addr, port: u16) -> String {
        match self.pod_by_ip(ip) {
            Some(k) => format!("{k} {ip}:{port}"),
            None => format!("{ip}:{port} (no pod of the state holds it)"),
        }
    }

    /// The Service port a select group serves: `ns/name port 80/TCP`. A port's group id is
    /// the port's id, or the id with a slot number in its top byte (several groups).
    pub fn group_service(&self, group_id: u32) -> Option<String> {
        let id = group_id & 0x00ff_ffff;
        self.service_of(id)
            .map(|(svc, p)| format!("{} port {}/{}", svc.key, p.port, p.protocol.name()))
    }

    fn service_of(
        &self,
        id: u32,
    ) -> Option<(&crate::state::ResolvedService, &crate::state::ResolvedPort)> {
        self.input
            .snapshot
            .services()
            .find_map(|svc| svc.ports.iter().find(|p| p.id == id).map(|p| (&**svc, p)))
    }

    /// `namespace/name:port-name/PROTOCOL` of the Service port with this id. A scan of the
    /// Services: asked only to explain a trace.
    fn service_port(&self, id: u32) -> Option<String> {
        self.input.snapshot.services().find_map(|svc| {
            svc.ports
                .iter()
                .find(|p| p.id == id)
                .map(|p| format!("{}:{}/{}", svc.key, p.name, p.protocol.name()))
        })
    }

    /// The rule with this conjunction id among the policies of this node.
    fn rule_of(&self, conj_id: u32) -> Option<RuleKey> {
        let s = self.input.snapshot;
        for p in s.policies_on(&self.node.name) {
            for d in Direction::BOTH {
                for i in 0..p.rules(d).map_or(0, |r| r.len()) {
                    let k = RuleKey {
                        policy: p.key.clone(),
                        direction: d,
                        index: i as u16,
                    };
                    if s.conj_id(&k) == Some(conj_id) {
                        return Some(k);
                    }
                }
            }
        }
        None
    }

    /// `80/TCP`, `53/UDP`, `ICMP`.
    fn l4(&self, p: &Packet) -> String {
        let (proto, dst) = match get(p, Field::IpProto) {
            6 => ("TCP", get(p, Field::TcpDst)),
            17 => ("UDP", get(p, Field::UdpDst)),
            132 => ("SCTP", get(p, Field::SctpDst)),
            1 => return "ICMP".into(),
            n => return format!("IP protocol {n}"),
        };
        format!("{dst}/{proto}")
    }

    /// The Service step of a run in Kubernetes terms, when the packet met a Service port's
    /// ServiceLb flow: `Service default/web port 80/TCP (10.96.0.10) → endpoint default/web-2
    /// 10.244.1.3:8080`, or that it has no endpoint.
    pub fn service_step(&self, run: &Run<'_>) -> Option<ServiceStep> {
        let (visit, flow) = run.visits.iter().enumerate().find_map(|(i, v)| {
            let f = v.flow?;
            (Table::from_id(v.table) == Some(Table::ServiceLb)
                && CookieCategory::of(f.cookie) == Some(CookieCategory::Service))
            .then_some((i, f))
        })?;
        let id = cookie_owner(flow.cookie);
        let Some((svc, port)) = self.service_of(id) else {
            return Some(ServiceStep {
                text: format!(
                    "Service port {id} (unknown to the state: the switch is behind the controller)"
                ),
                refused: None,
            });
        };
        let name = format!(
            "Service {} port {}/{}",
            svc.key,
            port.port,
            port.protocol.name()
        );
        let head = format!("{name} ({}:{})", svc.cluster_ip, port.port);
        if run.outputs.first().is_some_and(|o| o.visit == visit) {
            let (why, refused) = if port.endpoints.is_empty() || !port.datapath_refuses {
                (
                    "no usable endpoint".to_owned(),
                    format!("{name} has no usable endpoint"),
                )
            } else {
                let why = format!(
                    "{} ports are refused, not load-balanced: this datapath's conntrack does not track their ports (docs/operations.md, \"SCTP\")",
                    port.protocol.name()
                );
                (why.clone(), format!("{name}: {why}"))
            };
            return Some(ServiceStep {
                text: format!("{head}: {why}"),
                refused: Some(refused),
            });
        }
        // In the ServiceLb visit itself (a bucket's DNAT) or a later one (EndpointDnat, with
        // affinity).
        let dnat = run.translations.iter().find(|t| t.dst && t.visit >= visit);
        let Some(t) = dnat else {
            return Some(ServiceStep {
                text: format!("{head}: no endpoint chosen"),
                refused: None,
            });
        };
        let ep = self.endpoint_text(t.addr, t.port.unwrap_or(port.port));
        let bucket = |c: &super::engine::GroupChoice| {
            format!(
                "bucket {} of group {}: one of {} endpoints, picked by the switch's hash",
                c.bucket,
                c.group_id,
                c.endpoints.len()
            )
        };
        let multipath = run.multipaths.iter().find(|m| m.visit >= visit);
        let how = match (run.choices.iter().find(|c| c.visit >= visit), multipath) {
            (None, _) => " (a session affinity learned earlier)".into(),
            (Some(c), Some(m)) => format!(
                " (group {}: link {} of {}, {}; {})",
                c.group_id,
                m.link,
                m.n_links,
                if m.computed {
                    "which multipath picks from the packet's hash"
                } else {
                    "assumed: multipath's hash of this packet is not computed"
                },
                if c.endpoints.len() > 1 {
                    bucket(c)
                } else {
                    "its only endpoint".into()
                }
            ),
            (Some(c), None) if c.endpoints.len() > 1 => format!(" ({})", bucket(c)),
            (Some(_), None) => String::new(),
        };
        Some(ServiceStep {
            text: format!("{head} → endpoint {ep}{how}"),
            refused: None,
        })
    }

    /// The verdict, its sentence, and notes on how the policies decided.
    pub fn verdict(&self, initial: &Match, run: &Run<'_>) -> (Verdict, String, Vec<String>) {
        let notes = self.policy_notes(run);
        let (verdict, text, notes) = self.verdict_inner(initial, run, notes);
        match (self.service_step(run), verdict) {
            (
                Some(ServiceStep {
                    refused: Some(name),
                    ..
                }),
                Verdict::Output { port, .. },
            ) if port == port::CONTROLLER => {
                let reason = format!("refused: {name}");
                let text = format!(
                    "{reason}: the new connection goes to the controller (packet-in, rate-limited by meter {REJECT_METER_ID}), whose node agent answers with a TCP RST (ICMP port unreachable for UDP and SCTP)"
                );
                (Verdict::Refused { reason }, text, notes)
            }
            (Some(step), Verdict::Drop { reason }) => {
                let reason = format!("{reason} (after {})", step.text);
                (
                    Verdict::Drop {
                        reason: reason.clone(),
                    },
                    format!("dropped: {reason}"),
                    notes,
                )
            }
            (Some(step), v) => (v, format!("{}: {text}", step.text), notes),
            (None, v) => (v, text, notes),
        }
    }

    fn verdict_inner(
        &self,
        initial: &Match,
        run: &Run<'_>,
        notes: Vec<String>,
    ) -> (Verdict, String, Vec<String>) {
        if let Some(why) = &run.aborted {
            return (
                Verdict::Drop {
                    reason: why.clone(),
                },
                format!("dropped: {why}"),
                notes,
            );
        }
        let packet: Packet = initial
            .iter()
            .map(|mf| (mf.field, mf.value_u128()))
            .collect();
        let Some(out) = run.outputs.first() else {
            let reason = match run.visits.iter().rev().find(|v| v.dropped) {
                Some(v) => self.drop_reason(v),
                None => "no flow output the packet (its last flow had no output action)".into(),
            };
            return (
                Verdict::Drop {
                    reason: reason.clone(),
                },
                format!("dropped: {reason}"),
                notes,
            );
        };
        let mut notes = notes;
        if run.outputs.len() > 1 {
            let all: Vec<String> = run.outputs.iter().map(|o| self.port_name(o.port)).collect();
            notes.push(format!(
                "the packet is output {} times ({}); the verdict names the first",
                run.outputs.len(),
                all.join(", ")
            ));
        }
        let (verdict, text) = self.output_verdict(out, &packet);
        (verdict, text, notes)
    }

    fn output_verdict(&self, out: &Out, initial: &Packet) -> (Verdict, String) {
        // Where it goes as it left: after a Service's DNAT, the endpoint.
        let dst = ip(get(&out.packet, Field::Ipv4Dst));
        let is_ip = get(initial, Field::EthType) == 0x0800;
        if out.port == TUNNEL_OFPORT {
            let remote = ip(get(&out.packet, Field::TunDst));
            let node = self.node_with(|n| n.internal_ip == remote);
            let name = node.map_or_else(|| remote.to_string(), |n| n.name.to_string());
            let text = match node {
                Some(n) => format!(
                    "sent through the tunnel to node {} ({remote}), which delivers {}",
                    n.name,
                    if is_ip {
                        format!("to {}", self.describe(dst))
                    } else {
                        "it".into()
                    }
                ),
                None => format!("sent through the tunnel to {remote}, the InternalIP of no node"),
            };
            return (
                Verdict::Tunnel {
                    node: name,
                    remote_ip: remote,
                },
                text,
            );
        }
        if out.port == port::LOCAL {
            return (Verdict::Local, "sent to br-int's LOCAL port".into());
        }
        let name = self.port_name(out.port);
        let verdict = Verdict::Output {
            port: out.port,
            name: name.clone(),
        };
        let in_port = get(initial, Field::InPort) as u32;
        let text = if get(initial, Field::EthType) == 0x0806 && out.port == in_port {
            format!(
                "ARP answered by the switch: the reply for {} ({}) goes back out of port {} ({name})",
                ip(get(&out.packet, Field::ArpSpa)),
                mac_text(get(&out.packet, Field::ArpSha)),
                out.port
            )
        } else if out.port == GATEWAY_OFPORT {
            let to = if is_ip {
                self.describe(dst)
            } else {
                "it".into()
            };
            format!(
                "to node {}'s own network stack through the gateway port {GATEWAY_PORT} (destination {to})",
                self.node.name
            )
        } else if let Some((k, _)) = self.input.pods.iter().find(|(_, p)| p.ofport == out.port) {
            format!("delivered to pod {k} on port {} ({name})", out.port)
        } else if out.port == port::CONTROLLER {
            "sent to the controller (packet-in)".into()
        } else {
            format!("output to port {} ({name})", out.port)
        };
        (verdict, text)
    }

    fn drop_reason(&self, v: &Visit<'_>) -> String {
        let p = &v.packet;
        let node = &self.node.name;
        let Some(flow) = v.flow else {
            return format!(
                "no flow of table {} matched (OpenFlow 1.3 table-miss drops): node {node}'s pipeline is incomplete, is its switch realised?",
                self.table_name(v.table)
            );
        };
        let table = Table::from_id(v.table);
        let category = CookieCategory::of(flow.cookie);
        let in_port = get(p, Field::InPort) as u32;
        let src = ip(get(p, Field::Ipv4Src));
        let dst = ip(get(p, Field::Ipv4Dst));
        let eth = get(p, Field::EthType);
        match (table, category) {
            (Some(Table::Classifier), Some(CookieCategory::Pipeline)) => format!(
                "in_port {in_port} is no pod's, the tunnel's or the gateway's port on node {node}"
            ),
            (Some(Table::SpoofGuard), Some(CookieCategory::Pipeline)) => {
                let owner = self.input.pods.iter().find(|(_, i)| i.ofport == in_port);
                let claims = if eth == 0x0806 {
                    format!(
                        "arp_spa={}, arp_sha={}",
                        ip(get(p, Field::ArpSpa)),
                        mac_text(get(p, Field::ArpSha))
                    )
                } else if eth == 0x0800 {
                    format!("nw_src={src}")
                } else {
                    format!("dl_type={eth:#06x}")
                };
                match owner
                    .and_then(|(k, _)| self.input.snapshot.attachment(k).map(|a| (k, a.ip, a.mac)))
                {
                    Some((k, own_ip, own_mac)) => format!(
                        "spoofed source: port {in_port} is pod {k}'s ({own_ip}, {own_mac}), but the packet says dl_src={}, {claims}",
                        mac_text(get(p, Field::EthSrc))
                    ),
                    None => format!(
                        "spoofed source: no pod of node {node} sends from port {in_port} with dl_src={}, {claims}",
                        mac_text(get(p, Field::EthSrc))
                    ),
                }
            }
            (Some(Table::ArpResponder), Some(CookieCategory::Pipeline)) => format!(
                "ARP for {}: no local pod or gateway holds it, and the pipeline never floods ARP",
                self.describe(ip(get(p, Field::ArpTpa)))
            ),
            (Some(Table::Conntrack), Some(CookieCategory::Pipeline)) => format!(
                "dl_type {eth:#06x} is neither IPv4 nor ARP: the pipeline carries IPv4 only (IPv6 is not handled yet)"
            ),
            (Some(Table::ConntrackState), Some(CookieCategory::Pipeline)) => {
                "conntrack marks the packet invalid (+inv)".into()
            }
            (Some(Table::L2ForwardingCalc), Some(CookieCategory::Pipeline)) => {
                let to = if eth == 0x0800 {
                    format!("; its destination is {}", self.describe(dst))
                } else {
                    String::new()
                };
                format!(
                    "unknown destination: dl_dst={} is neither a local pod's, the gateway's ({}) nor the tunnel's ({TUNNEL_PEER_MAC}) MAC{to}",
                    mac_text(get(p, Field::EthDst)),
                    mac_for(self.node.gateway_ip())
                )
            }
            (
                Some(t @ (Table::IngressRule | Table::EgressRule)),
                Some(CookieCategory::PolicyTarget),
            ) => {
                let d = if t == Table::IngressRule {
                    Direction::Ingress
                } else {
                    Direction::Egress
                };
                let subject = match d {
                    Direction::Ingress => dst,
                    Direction::Egress => src,
                };
                let by: Vec<String> = self
                    .pod_by_ip(subject)
                    .map(|k| {
                        self.input
                            .snapshot
                            .policies_selecting(&k)
                            .filter(|pol| pol.rules(d).is_some())
                            .map(|pol| pol.key.to_string())
                            .collect()
                    })
                    .unwrap_or_default();
                let l4 = self.l4(p);
                let flow_l4 = if l4 == "ICMP" || l4.starts_with("IP protocol") {
                    format!(" ({l4})")
                } else {
                    format!(":{l4}")
                };
                format!(
                    "no policy allows {} → {}{flow_l4}; isolated for {} by policy {}",
                    self.short(src),
                    self.short(dst),
                    d.field(),
                    if by.is_empty() {
                        "(none found in the state: the switch is behind the controller)".into()
                    } else {
                        by.join(", ")
                    }
                )
            }
            _ => format!(
                "dropped by flow {} ({}) in table {}",
                self.flow_text(flow),
                self.owner(flow.cookie),
                self.table_name(v.table)
            ),
        }
    }

    /// How the policies decided, for every policy flow on the path.
    fn policy_notes(&self, run: &Run<'_>) -> Vec<String> {
        let mut notes = vec![];
        for v in &run.visits {
            let Some(flow) = v.flow else { continue };
            let d = match Table::from_id(v.table) {
                Some(Table::IngressRule) => Direction::Ingress,
                Some(Table::EgressRule) => Direction::Egress,
                _ => continue,
            };
            let p = &v.packet;
            let (src, dst) = (
                self.short(ip(get(p, Field::Ipv4Src))),
                self.short(ip(get(p, Field::Ipv4Dst))),
            );
            let note = match CookieCategory::of(flow.cookie) {
                Some(CookieCategory::PolicyRule) => Some(format!(
                    "{} {src} → {dst} ({}) allowed by {} (conj_id {})",
                    d.field(),
                    self.l4(p),
                    self.owner(flow.cookie),
                    cookie_owner(flow.cookie)
                )),
                Some(CookieCategory::PolicyTarget) if !v.dropped => Some(format!(
                    "{} {src} → {dst} ({}) allowed by a rule that admits every {} ({})",
                    d.field(),
                    self.l4(p),
                    match d {
                        Direction::Ingress => "source",
                        Direction::Egress => "destination",
                    },
                    self.owner(flow.cookie)
                )),
                Some(CookieCategory::PolicyBase)
                    if d == Direction::Ingress
                        && get(p, Field::Reg(REG_SOURCE_CLASS)) == SourceClass::Gateway as u128 =>
                {
                    Some("ingress allowed: traffic from the node itself (through the gateway, from one of the node's own addresses) is always admitted".into())
                }
                Some(CookieCategory::Pipeline) => Some(format!(
                    "{}: {} is not isolated for {} by any policy",
                    d.field(),
                    match d {
                        Direction::Ingress => dst,
                        Direction::Egress => src,
                    },
                    d.field()
                )),
                _ => None,
            };
            notes.extend(note);
        }
        notes
    }
}
