//! The packet of a trace, from one of two syntaxes:
//! - an `ovs-ofctl` microflow, as `ovs-appctl ofproto/trace` takes it
//!   (`in_port=PORT,tcp,nw_src=...,nw_dst=...,tp_dst=80`), where `in_port` may also be an
//!   interface name or a pod `NS/NAME`; fields not given are 0, as in ofproto/trace;
//! - `from=NS/POD to=NS/POD|service:NS/NAME|IP [port=N[/TCP|UDP|SCTP]]`, resolved from the
//!   state: the source pod's port (or the tunnel, when it runs on another node), its MAC and
//!   address, the destination MAC the pod's own stack would use (the pod's MAC for a pod of
//!   its subnet, the switch answers ARP for it; else its gateway's), `tp_src=49152` (another
//!   with `sport=N`: UDP Services and large ports pick their group by a hash of the ports);
//!   without `port=`, an ICMP echo request. `service:NS/NAME` is the Service's cluster IP;
//!   `port=` names one of its ports (optional when it has one).
//!
//! Both take `dp_hash=N`: the hash a select group picks its bucket by (OVS computes it in the
//! datapath; ofproto/trace follows a bucket only when given one).

use std::net::Ipv4Addr;

use openflow::{Field, Match, MatchField};

use super::TraceError;
use super::explain::Context;
use crate::ipam::mac_for;
use crate::pipeline::{TUNNEL_OFPORT, TUNNEL_PEER_MAC};
use crate::policy::Protocol;
use crate::source::ObjectKey;

/// The source port `from=` packets use (the first ephemeral port).
pub(super) const FROM_TP_SRC: u16 = 49152;

pub(super) fn parse(text: &str, ctx: &Context<'_>) -> Result<(Match, Option<u32>), TraceError> {
    let syntax = |reason: String| TraceError::Syntax {
        packet: text.to_owned(),
        reason,
    };
    let mut dp_hash = None;
    let mut tokens: Vec<&str> = vec![];
    for t in text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
    {
        match t.strip_prefix("dp_hash=") {
            Some(v) => {
                let n = match v.strip_prefix("0x") {
                    Some(hex) => u32::from_str_radix(hex, 16),
                    None => v.parse::<u32>(),
                };
                dp_hash = Some(n.map_err(|_| {
                    syntax(format!(
                        "dp_hash={v}: not a 32-bit number (decimal or 0x hex)"
                    ))
                })?);
            }
            None => tokens.push(t),
        }
    }
    if tokens.is_empty() {
        return Err(syntax(
            "empty: give a microflow (in_port=...,tcp,nw_dst=...) or from=NS/POD to=NS/POD".into(),
        ));
    }
    let m = if tokens.iter().any(|t| t.starts_with("from=")) {
        resolve_from(&tokens, ctx)
    } else {
        microflow(&tokens, ctx)
    };
    let m = m.map_err(|e| match e {
        Resolve::Syntax(reason) => syntax(reason),
        Resolve::Trace(e) => e,
    })?;
    Ok((m, dp_hash))
}

enum Resolve {
    Syntax(String),
    Trace(TraceError),
}

impl From<TraceError> for Resolve {
    fn from(e: TraceError) -> Resolve {
        Resolve::Trace(e)
    }
}

fn insert(m: &mut Match, mf: MatchField) {
    m.insert(mf)
        .expect("fields built here have the right width");
}

fn microflow(tokens: &[&str], ctx: &Context<'_>) -> Result<Match, Resolve> {
    let mut in_port = None;
    let mut rest = Vec::new();
    for t in tokens {
        match t.strip_prefix("in_port=") {
            Some(v) => in_port = Some(ctx.resolve_port(v)?),
            None => rest.push(*t),
        }
    }
    let Some(in_port) = in_port else {
        return Err(Resolve::Syntax(
            "no in_port=: say where the packet enters (a port number, an interface name or a pod NS/NAME)"
                .into(),
        ));
    };
    let filter = openflow::text::parse_flow_filter(&rest.join(","))
        .map_err(|e| Resolve::Syntax(e.to_string()))?;
    if filter.table_id.is_some()
        || filter.cookie.is_some()
        || filter.out_port.is_some()
        || filter.out_group.is_some()
        || filter.priority.is_some()
    {
        return Err(Resolve::Syntax(
            "table=, cookie=, priority=, out_port= and out_group= select flows; a packet has fields only"
                .into(),
        ));
    }
    if let Some(mf) = filter.match_.iter().find(|mf| mf.mask.is_some()) {
        return Err(Resolve::Syntax(format!(
            "{} has a mask: a packet has exact values",
            mf.field
        )));
    }
    let mut m = filter.match_;
    insert(&mut m, MatchField::u32(Field::InPort, in_port));
    Ok(m)
}

fn resolve_from(tokens: &[&str], ctx: &Context<'_>) -> Result<Match, Resolve> {
    let (mut from, mut to, mut port, mut sport) = (None, None, None, None);
    for t in tokens {
        let Some((k, v)) = t.split_once('=') else {
            return Err(Resolve::Syntax(format!(
                "{t:?}: expected from=NS/POD, to=NS/POD|service:NS/NAME|IP, port=N[/PROTOCOL] or sport=N"
            )));
        };
        match k {
            "from" => from = Some(pod_key(v)?),
            "to" => to = Some(v),
            "port" => port = Some(l4(v)?),
            "sport" => {
                sport = Some(v.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                    Resolve::Syntax(format!("sport={v}: {v:?} is not a port 1-65535"))
                })?)
            }
            _ => {
                return Err(Resolve::Syntax(format!(
                    "{k}= is not a key of the from= form (from=, to=, port=, sport=)"
                )));
            }
        }
    }
    let (Some(from), Some(to)) = (from, to) else {
        return Err(Resolve::Syntax(
            "the from= form needs both from= and to=".into(),
        ));
    };
    if sport.is_some() && port.is_none() && !to.starts_with("service:") {
        return Err(Resolve::Syntax(
            "sport= needs port=N/PROTOCOL (without it the packet is an ICMP echo request)".into(),
        ));
    }
    let s = ctx.input.snapshot;
    let src = s
        .pod(&from)
        .ok_or_else(|| TraceError::UnknownPod(from.clone()))?;
    let src_ip = s
        .attachment(&from)
        .map(|a| a.ip)
        .ok_or_else(|| TraceError::NoAddress(from.clone()))?;
    let dst_ip = if let Some(svc) = to.strip_prefix("service:") {
        let key = pod_key(svc).map_err(|_| {
            Resolve::Syntax(format!(
                "to={to}: write service:NAMESPACE/NAME for a Service"
            ))
        })?;
        let resolved = s
            .service(&key)
            .ok_or_else(|| TraceError::UnknownService(key.clone()))?;
        let (protocol, number) = service_port(&key, resolved, port)?;
        port = Some((protocol, number));
        resolved.cluster_ip
    } else {
        match to.parse::<Ipv4Addr>() {
            Ok(ip) => ip,
            Err(_) => {
                let key = pod_key(to)?;
                s.pod(&key)
                    .ok_or_else(|| TraceError::UnknownPod(key.clone()))?;
                s.attachment(&key)
                    .map(|a| a.ip)
                    .ok_or(TraceError::NoAddress(key))?
            }
        }
    };
    let mut m = Match::new();
    if src.node == *ctx.node.name {
        let installed = ctx
            .input
            .pods
            .get(&from)
            .ok_or_else(|| TraceError::NotAttached {
                pod: from.clone(),
                node: ctx.node.name.to_string(),
            })?;
        insert(&mut m, MatchField::u32(Field::InPort, installed.ofport));
        insert(
            &mut m,
            MatchField::mac(Field::EthSrc, mac_for(src_ip).octets()),
        );
        // The pod's own stack: on-link for its subnet (the switch answers ARP for the
        // node's pods), through its gateway for everything else.
        let dst_mac = if ctx.node.pod_cidr.contains(&dst_ip) && dst_ip != ctx.node.gateway_ip() {
            mac_for(dst_ip)
        } else {
            mac_for(ctx.node.gateway_ip())
        };
        insert(&mut m, MatchField::mac(Field::EthDst, dst_mac.octets()));
    } else {
        // Another node's pod arrives through the tunnel, as that node's L3Forwarding sent it.
        let src_node = s
            .node(&src.node)
            .ok_or_else(|| TraceError::UnknownPod(from.clone()))?;
        insert(&mut m, MatchField::u32(Field::InPort, TUNNEL_OFPORT));
        insert(
            &mut m,
            MatchField::ipv4(Field::TunSrc, src_node.internal_ip),
        );
        insert(
            &mut m,
            MatchField::ipv4(Field::TunDst, ctx.node.internal_ip),
        );
        insert(
            &mut m,
            MatchField::mac(Field::EthSrc, mac_for(src_ip).octets()),
        );
        insert(
            &mut m,
            MatchField::mac(Field::EthDst, TUNNEL_PEER_MAC.octets()),
        );
    }
    insert(&mut m, MatchField::u16(Field::EthType, 0x0800));
    insert(&mut m, MatchField::ipv4(Field::Ipv4Src, src_ip));
    insert(&mut m, MatchField::ipv4(Field::Ipv4Dst, dst_ip));
    match port {
        Some((protocol, port)) => {
            insert(&mut m, MatchField::u8(Field::IpProto, protocol.number()));
            let (sf, df) = match protocol {
                Protocol::Tcp => (Field::TcpSrc, Field::TcpDst),
                Protocol::Udp => (Field::UdpSrc, Field::UdpDst),
                Protocol::Sctp => (Field::SctpSrc, Field::SctpDst),
            };
            insert(&mut m, MatchField::u16(sf, sport.unwrap_or(FROM_TP_SRC)));
            insert(&mut m, MatchField::u16(df, port));
        }
        None => {
            insert(&mut m, MatchField::u8(Field::IpProto, 1));
            insert(&mut m, MatchField::u8(Field::Icmpv4Type, 8));
        }
    }
    Ok(m)
}

/// The Service port `port=` names (protocol and number; its protocol defaults to TCP);
/// without `port=`, the Service's only port.
fn service_port(
    key: &ObjectKey,
    svc: &crate::state::ResolvedService,
    given: Option<(Protocol, u16)>,
) -> Result<(Protocol, u16), Resolve> {
    let ports = || {
        svc.ports
            .iter()
            .map(|p| {
                if p.name.is_empty() {
                    format!("{}/{}", p.port, p.protocol.name())
                } else {
                    format!("{}/{} ({})", p.port, p.protocol.name(), p.name)
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let fail = |reason: String| {
        Resolve::Trace(TraceError::NoServicePort {
            service: key.clone(),
            reason,
            ports: ports(),
        })
    };
    match given {
        Some((protocol, number)) => svc
            .ports
            .iter()
            .find(|p| p.protocol == protocol && p.port == number)
            .map(|p| (p.protocol, p.port))
            .ok_or_else(|| fail(format!("no port {number}/{}", protocol.name()))),
        None => match svc.ports.as_slice() {
            [only] => Ok((only.protocol, only.port)),
            [] => Err(fail("it has no ports".into())),
            _ => Err(fail(
                "it has several ports: say which with port=N/PROTO".into(),
            )),
        },
    }
}

fn pod_key(v: &str) -> Result<ObjectKey, Resolve> {
    match v.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok(ObjectKey::new(ns, name))
        }
        _ => Err(Resolve::Syntax(format!(
            "{v:?} is not a pod: write NAMESPACE/NAME"
        ))),
    }
}

fn l4(v: &str) -> Result<(Protocol, u16), Resolve> {
    let (port, proto) = match v.split_once('/') {
        Some((p, proto)) => (p, Some(proto.to_ascii_uppercase())),
        None => (v, None),
    };
    let protocol = Protocol::parse(proto.as_deref()).ok_or_else(|| {
        Resolve::Syntax(format!(
            "port={v}: protocol must be TCP, UDP or SCTP (leave port= out for ICMP)"
        ))
    })?;
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| Resolve::Syntax(format!("port={v}: {port:?} is not a port 1-65535")))?;
    Ok((protocol, port))
}
