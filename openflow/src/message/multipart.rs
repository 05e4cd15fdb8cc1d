//! OFPT_MULTIPART_REQUEST / REPLY: flow, aggregate, table, port, group statistics and
//! descriptions, and ONF flow monitors ([`crate::message::flow_monitor`]). A reply may be split over several messages flagged OFPMPF_REPLY_MORE;
//! [`MultipartReplyBody::concat`] reassembles them.

use bytes::{BufMut, Bytes, BytesMut};

use crate::field::ONF_EXPERIMENTER;
use crate::instruction::Instruction;
use crate::matching::Match;
use crate::message::flow_monitor::{self, FlowMonitorRequest, FlowUpdate, ONFMP_FLOW_MONITOR};
use crate::message::group::{GroupDesc, GroupStats};
use crate::message::port_status::PortDesc;
use crate::port;
use crate::wire::{Reader, patch_len16, put_fixed_str, put_zeros};
use crate::{Error, Result};

/// OFPMPF_REQ_MORE / OFPMPF_REPLY_MORE: more parts follow.
pub const OFPMPF_MORE: u16 = 1;

mod ofpmp {
    pub const DESC: u16 = 0;
    pub const FLOW: u16 = 1;
    pub const AGGREGATE: u16 = 2;
    pub const TABLE: u16 = 3;
    pub const PORT_STATS: u16 = 4;
    pub const GROUP: u16 = 6;
    pub const GROUP_DESC: u16 = 7;
    pub const PORT_DESC: u16 = 13;
    pub const EXPERIMENTER: u16 = 0xffff;
}

/// True when an OFPMP_EXPERIMENTER body starts with the ONFST_FLOW_MONITOR header.
fn is_onf_flow_monitor(r: &Reader) -> bool {
    let mut peek = r.clone();
    matches!(
        (peek.u32("experimenter"), peek.u32("experimenter type")),
        (Ok(ONF_EXPERIMENTER), Ok(ONFMP_FLOW_MONITOR))
    )
}

/// Filter of a flow or aggregate statistics request.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FlowStatsRequest {
    /// Table, or [`port::TABLE_ALL`].
    pub table_id: u8,
    /// Only flows outputting to this port, or [`port::ANY`].
    pub out_port: u32,
    /// Only flows using this group, or [`port::GROUP_ANY`].
    pub out_group: u32,
    /// Cookie value to filter on.
    pub cookie: u64,
    /// Cookie bits that must match (0: no cookie filter).
    pub cookie_mask: u64,
    /// Only flows this match covers (empty: all).
    pub match_: Match,
}

impl Default for FlowStatsRequest {
    fn default() -> FlowStatsRequest {
        FlowStatsRequest {
            table_id: port::TABLE_ALL,
            out_port: port::ANY,
            out_group: port::GROUP_ANY,
            cookie: 0,
            cookie_mask: 0,
            match_: Match::new(),
        }
    }
}

impl FlowStatsRequest {
    /// Every flow of one table ([`port::TABLE_ALL`] for all tables).
    pub fn table(table_id: u8) -> FlowStatsRequest {
        FlowStatsRequest {
            table_id,
            ..FlowStatsRequest::default()
        }
    }

    /// Restricts to flows whose cookie matches `cookie` in the bits of `mask`.
    pub fn with_cookie(mut self, cookie: u64, mask: u64) -> FlowStatsRequest {
        self.cookie = cookie;
        self.cookie_mask = mask;
        self
    }

    fn encode(&self, out: &mut BytesMut) -> Result<()> {
        out.put_u8(self.table_id);
        put_zeros(out, 3);
        out.put_u32(self.out_port);
        out.put_u32(self.out_group);
        put_zeros(out, 4);
        out.put_u64(self.cookie);
        out.put_u64(self.cookie_mask);
        self.match_.encode(out)
    }

    fn decode(r: &mut Reader) -> Result<FlowStatsRequest> {
        let table_id = r.u8("flow stats request table_id")?;
        r.skip("flow stats request pad", 3)?;
        let out_port = r.u32("flow stats request out_port")?;
        let out_group = r.u32("flow stats request out_group")?;
        r.skip("flow stats request pad", 4)?;
        let cookie = r.u64("flow stats request cookie")?;
        let cookie_mask = r.u64("flow stats request cookie_mask")?;
        let match_ = Match::decode(r)?;
        Ok(FlowStatsRequest {
            table_id,
            out_port,
            out_group,
            cookie,
            cookie_mask,
            match_,
        })
    }
}

/// One flow of a flow statistics reply.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FlowStats {
    /// Table the flow is in.
    pub table_id: u8,
    /// Seconds the flow has been installed.
    pub duration_sec: u32,
    /// Nanoseconds beyond `duration_sec`.
    pub duration_nsec: u32,
    /// Priority.
    pub priority: u16,
    /// Idle timeout.
    pub idle_timeout: u16,
    /// Hard timeout.
    pub hard_timeout: u16,
    /// OFPFF_* flags.
    pub flags: u16,
    /// Cookie.
    pub cookie: u64,
    /// Packets matched.
    pub packet_count: u64,
    /// Bytes matched.
    pub byte_count: u64,
    /// Match.
    pub match_: Match,
    /// Instructions.
    pub instructions: Vec<Instruction>,
}

impl From<&crate::message::FlowMod> for FlowStats {
    /// The entry a switch would report for a freshly added flow-mod: same table, priority,
    /// timeouts, flags, cookie, match and instructions, zero duration and counters.
    fn from(fm: &crate::message::FlowMod) -> FlowStats {
        FlowStats {
            table_id: fm.table_id,
            duration_sec: 0,
            duration_nsec: 0,
            priority: fm.priority,
            idle_timeout: fm.idle_timeout,
            hard_timeout: fm.hard_timeout,
            flags: fm.flags,
            cookie: fm.cookie,
            packet_count: 0,
            byte_count: 0,
            match_: fm.match_.clone(),
            instructions: fm.instructions.clone(),
        }
    }
}

impl FlowStats {
    fn encode(&self, out: &mut BytesMut) -> Result<()> {
        let start = out.len();
        out.put_u16(0);
        out.put_u8(self.table_id);
        out.put_u8(0);
        out.put_u32(self.duration_sec);
        out.put_u32(self.duration_nsec);
        out.put_u16(self.priority);
        out.put_u16(self.idle_timeout);
        out.put_u16(self.hard_timeout);
        out.put_u16(self.flags);
        put_zeros(out, 4);
        out.put_u64(self.cookie);
        out.put_u64(self.packet_count);
        out.put_u64(self.byte_count);
        self.match_.encode(out)?;
        Instruction::encode_list(&self.instructions, out)?;
        let len = out.len() - start;
        patch_len16(out, start, len, "flow stats entry")
    }

    fn decode(r: &mut Reader) -> Result<FlowStats> {
        let len = r.peek_u16("flow stats length", 0)? as usize;
        if len < 56 {
            return Err(Error::BadLength {
                what: "flow stats entry",
                length: len,
                reason: "shorter than its 56-byte minimum",
            });
        }
        let mut f = r.sub("flow stats entry", len)?;
        f.skip("flow stats length", 2)?;
        let table_id = f.u8("flow stats table_id")?;
        f.skip("flow stats pad", 1)?;
        let duration_sec = f.u32("flow stats duration_sec")?;
        let duration_nsec = f.u32("flow stats duration_nsec")?;
        let priority = f.u16("flow stats priority")?;
        let idle_timeout = f.u16("flow stats idle_timeout")?;
        let hard_timeout = f.u16("flow stats hard_timeout")?;
        let flags = f.u16("flow stats flags")?;
        f.skip("flow stats pad", 4)?;
        let cookie = f.u64("flow stats cookie")?;
        let packet_count = f.u64("flow stats packet_count")?;
        let byte_count = f.u64("flow stats byte_count")?;
        let match_ = Match::decode(&mut f)?;
        let instructions = Instruction::decode_list(&mut f)?;
        Ok(FlowStats {
            table_id,
            duration_sec,
            duration_nsec,
            priority,
            idle_timeout,
            hard_timeout,
            flags,
            cookie,
            packet_count,
            byte_count,
            match_,
            instructions,
        })
    }
}

/// OFPMP_AGGREGATE reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct AggregateStats {
    /// Packets matched by the selected flows.
    pub packet_count: u64,
    /// Bytes matched.
    pub byte_count: u64,
    /// Number of flows selected.
    pub flow_count: u32,
}

/// OFPMP_DESC reply: what the switch is.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct SwitchDesc {
    /// Manufacturer ("Nicira, Inc.").
    pub mfr_desc: String,
    /// Hardware ("Open vSwitch").
    pub hw_desc: String,
    /// Software (the OVS version).
    pub sw_desc: String,
    /// Serial number.
    pub serial_num: String,
    /// Datapath description.
    pub dp_desc: String,
}

/// OFPMP_TABLE reply entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct TableStats {
    /// Table.
    pub table_id: u8,
    /// Flows in the table.
    pub active_count: u32,
    /// Packets looked up.
    pub lookup_count: u64,
    /// Packets that matched a flow.
    pub matched_count: u64,
}

/// OFPMP_PORT_STATS reply entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct PortStats {
    /// Port.
    pub port_no: u32,
    /// Received packets.
    pub rx_packets: u64,
    /// Transmitted packets.
    pub tx_packets: u64,
    /// Received bytes.
    pub rx_bytes: u64,
    /// Transmitted bytes.
    pub tx_bytes: u64,
    /// Packets dropped on receive.
    pub rx_dropped: u64,
    /// Packets dropped on transmit.
    pub tx_dropped: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Transmit errors.
    pub tx_errors: u64,
    /// Frame alignment errors.
    pub rx_frame_err: u64,
    /// Overruns.
    pub rx_over_err: u64,
    /// CRC errors.
    pub rx_crc_err: u64,
    /// Collisions.
    pub collisions: u64,
    /// Seconds the port has been alive.
    pub duration_sec: u32,
    /// Nanoseconds beyond `duration_sec`.
    pub duration_nsec: u32,
}

/// Body of a multipart request.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MultipartRequestBody {
    /// OFPMP_DESC.
    Desc,
    /// OFPMP_FLOW.
    Flow(FlowStatsRequest),
    /// OFPMP_AGGREGATE.
    Aggregate(FlowStatsRequest),
    /// OFPMP_TABLE.
    Table,
    /// OFPMP_PORT_STATS for one port or [`port::ANY`].
    PortStats(u32),
    /// OFPMP_PORT_DESC.
    PortDesc,
    /// OFPMP_GROUP for one group or [`port::GROUP_ALL`].
    GroupStats(u32),
    /// OFPMP_GROUP_DESC.
    GroupDesc,
    /// ONFST_FLOW_MONITOR (OFPMP_EXPERIMENTER, ONF 1870): start flow monitors.
    FlowMonitor(Vec<FlowMonitorRequest>),
    /// Any other multipart type, kept verbatim.
    Other {
        /// OFPMP_* type.
        mp_type: u16,
        /// Body.
        body: Bytes,
    },
}

/// A multipart request.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MultipartRequest {
    /// OFPMPF_* flags.
    pub flags: u16,
    /// What is requested.
    pub body: MultipartRequestBody,
}

impl MultipartRequest {
    /// A single-part request.
    pub fn new(body: MultipartRequestBody) -> MultipartRequest {
        MultipartRequest { flags: 0, body }
    }

    pub(crate) fn encode_body(&self, out: &mut BytesMut) -> Result<()> {
        use MultipartRequestBody as B;
        let t = match &self.body {
            B::Desc => ofpmp::DESC,
            B::Flow(_) => ofpmp::FLOW,
            B::Aggregate(_) => ofpmp::AGGREGATE,
            B::Table => ofpmp::TABLE,
            B::PortStats(_) => ofpmp::PORT_STATS,
            B::PortDesc => ofpmp::PORT_DESC,
            B::GroupStats(_) => ofpmp::GROUP,
            B::GroupDesc => ofpmp::GROUP_DESC,
            B::FlowMonitor(_) => ofpmp::EXPERIMENTER,
            B::Other { mp_type, .. } => *mp_type,
        };
        out.put_u16(t);
        out.put_u16(self.flags);
        put_zeros(out, 4);
        match &self.body {
            B::Desc | B::Table | B::PortDesc | B::GroupDesc => {}
            B::Flow(f) | B::Aggregate(f) => f.encode(out)?,
            B::PortStats(p) | B::GroupStats(p) => {
                out.put_u32(*p);
                put_zeros(out, 4);
            }
            B::FlowMonitor(v) => {
                out.put_u32(ONF_EXPERIMENTER);
                out.put_u32(ONFMP_FLOW_MONITOR);
                v.iter().try_for_each(|m| m.encode(out))?;
            }
            B::Other { body, .. } => out.put_slice(body),
        }
        Ok(())
    }

    pub(crate) fn decode_body(r: &mut Reader) -> Result<MultipartRequest> {
        use MultipartRequestBody as B;
        let t = r.u16("multipart request type")?;
        let flags = r.u16("multipart request flags")?;
        r.skip("multipart request pad", 4)?;
        let body = match t {
            ofpmp::DESC => B::Desc,
            ofpmp::FLOW => B::Flow(FlowStatsRequest::decode(r)?),
            ofpmp::AGGREGATE => B::Aggregate(FlowStatsRequest::decode(r)?),
            ofpmp::TABLE => B::Table,
            ofpmp::PORT_STATS => B::PortStats(r.u32("port stats request port_no")?),
            ofpmp::PORT_DESC => B::PortDesc,
            ofpmp::GROUP => B::GroupStats(r.u32("group stats request group_id")?),
            ofpmp::GROUP_DESC => B::GroupDesc,
            ofpmp::EXPERIMENTER if is_onf_flow_monitor(r) => {
                r.skip("flow monitor experimenter header", 8)?;
                B::FlowMonitor(flow_monitor::decode_requests(r)?)
            }
            t => B::Other {
                mp_type: t,
                body: r.rest(),
            },
        };
        Ok(MultipartRequest { flags, body })
    }
}

/// Body of (one part of) a multipart reply.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MultipartReplyBody {
    /// OFPMP_DESC.
    Desc(SwitchDesc),
    /// OFPMP_FLOW.
    Flow(Vec<FlowStats>),
    /// OFPMP_AGGREGATE.
    Aggregate(AggregateStats),
    /// OFPMP_TABLE.
    Table(Vec<TableStats>),
    /// OFPMP_PORT_STATS.
    PortStats(Vec<PortStats>),
    /// OFPMP_PORT_DESC.
    PortDesc(Vec<PortDesc>),
    /// OFPMP_GROUP.
    GroupStats(Vec<GroupStats>),
    /// OFPMP_GROUP_DESC.
    GroupDesc(Vec<GroupDesc>),
    /// ONFST_FLOW_MONITOR (OFPMP_EXPERIMENTER, ONF 1870): the reply to a flow monitor
    /// request, and (with xid 0) every later update the switch sends on its own.
    FlowMonitor(Vec<FlowUpdate>),
    /// Any other multipart type, kept verbatim.
    Other {
        /// OFPMP_* type.
        mp_type: u16,
        /// Body.
        body: Bytes,
    },
}

impl MultipartReplyBody {
    /// Joins the parts of a reply sent as several OFPMPF_REPLY_MORE messages into one
    /// body. All parts must be of the same type; single-valued kinds (desc, aggregate)
    /// keep the last part.
    pub fn concat(parts: Vec<MultipartReplyBody>) -> Result<MultipartReplyBody> {
        use MultipartReplyBody as B;
        let mut it = parts.into_iter();
        let Some(mut acc) = it.next() else {
            return Err(Error::Protocol("multipart reply with no parts".into()));
        };
        for part in it {
            match (&mut acc, part) {
                (B::Flow(a), B::Flow(b)) => a.extend(b),
                (B::Table(a), B::Table(b)) => a.extend(b),
                (B::PortStats(a), B::PortStats(b)) => a.extend(b),
                (B::PortDesc(a), B::PortDesc(b)) => a.extend(b),
                (B::GroupStats(a), B::GroupStats(b)) => a.extend(b),
                (B::GroupDesc(a), B::GroupDesc(b)) => a.extend(b),
                (B::FlowMonitor(a), B::FlowMonitor(b)) => a.extend(b),
                (
                    B::Other {
                        mp_type: t1,
                        body: a,
                    },
                    B::Other {
                        mp_type: t2,
                        body: b,
                    },
                ) if *t1 == t2 => {
                    let mut v = a.to_vec();
                    v.extend_from_slice(&b);
                    *a = Bytes::from(v);
                }
                (B::Desc(_), b @ B::Desc(_)) | (B::Aggregate(_), b @ B::Aggregate(_)) => acc = b,
                (a, b) => {
                    return Err(Error::Protocol(format!(
                        "multipart reply parts of different types: {:?} then {:?}",
                        a.kind(),
                        b.kind()
                    )));
                }
            }
        }
        Ok(acc)
    }

    fn kind(&self) -> u16 {
        use MultipartReplyBody as B;
        match self {
            B::Desc(_) => ofpmp::DESC,
            B::Flow(_) => ofpmp::FLOW,
            B::Aggregate(_) => ofpmp::AGGREGATE,
            B::Table(_) => ofpmp::TABLE,
            B::PortStats(_) => ofpmp::PORT_STATS,
            B::PortDesc(_) => ofpmp::PORT_DESC,
            B::GroupStats(_) => ofpmp::GROUP,
            B::GroupDesc(_) => ofpmp::GROUP_DESC,
            B::FlowMonitor(_) => ofpmp::EXPERIMENTER,
            B::Other { mp_type, .. } => *mp_type,
        }
    }
}

/// A multipart reply (one part).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MultipartReply {
    /// OFPMPF_* flags; [`OFPMPF_MORE`] when more parts follow.
    pub flags: u16,
    /// This part's entries.
    pub body: MultipartReplyBody,
}

impl MultipartReply {
    /// True when more parts of this reply follow.
    pub fn more(&self) -> bool {
        self.flags & OFPMPF_MORE != 0
    }

    pub(crate) fn encode_body(&self, out: &mut BytesMut) -> Result<()> {
        use MultipartReplyBody as B;
        out.put_u16(self.body.kind());
        out.put_u16(self.flags);
        put_zeros(out, 4);
        match &self.body {
            B::Desc(d) => {
                put_fixed_str(out, &d.mfr_desc, 256);
                put_fixed_str(out, &d.hw_desc, 256);
                put_fixed_str(out, &d.sw_desc, 256);
                put_fixed_str(out, &d.serial_num, 32);
                put_fixed_str(out, &d.dp_desc, 256);
            }
            B::Flow(v) => v.iter().try_for_each(|f| f.encode(out))?,
            B::Aggregate(a) => {
                out.put_u64(a.packet_count);
                out.put_u64(a.byte_count);
                out.put_u32(a.flow_count);
                put_zeros(out, 4);
            }
            B::Table(v) => {
                for t in v {
                    out.put_u8(t.table_id);
                    put_zeros(out, 3);
                    out.put_u32(t.active_count);
                    out.put_u64(t.lookup_count);
                    out.put_u64(t.matched_count);
                }
            }
            B::PortStats(v) => {
                for p in v {
                    out.put_u32(p.port_no);
                    put_zeros(out, 4);
                    for c in [
                        p.rx_packets,
                        p.tx_packets,
                        p.rx_bytes,
                        p.tx_bytes,
                        p.rx_dropped,
                        p.tx_dropped,
                        p.rx_errors,
                        p.tx_errors,
                        p.rx_frame_err,
                        p.rx_over_err,
                        p.rx_crc_err,
                        p.collisions,
                    ] {
                        out.put_u64(c);
                    }
                    out.put_u32(p.duration_sec);
                    out.put_u32(p.duration_nsec);
                }
            }
            B::PortDesc(v) => v.iter().for_each(|p| p.encode(out)),
            B::GroupStats(v) => v.iter().try_for_each(|g| g.encode(out))?,
            B::GroupDesc(v) => v.iter().try_for_each(|g| g.encode(out))?,
            B::FlowMonitor(v) => {
                out.put_u32(ONF_EXPERIMENTER);
                out.put_u32(ONFMP_FLOW_MONITOR);
                v.iter().try_for_each(|u| u.encode(out))?;
            }
            B::Other { body, .. } => out.put_slice(body),
        }
        Ok(())
    }

    pub(crate) fn decode_body(r: &mut Reader) -> Result<MultipartReply> {
        use MultipartReplyBody as B;
        let t = r.u16("multipart reply type")?;
        let flags = r.u16("multipart reply flags")?;
        r.skip("multipart reply pad", 4)?;
        let body = match t {
            ofpmp::DESC => B::Desc(SwitchDesc {
                mfr_desc: r.fixed_str("desc mfr_desc", 256)?,
                hw_desc: r.fixed_str("desc hw_desc", 256)?,
                sw_desc: r.fixed_str("desc sw_desc", 256)?,
                serial_num: r.fixed_str("desc serial_num", 32)?,
                dp_desc: r.fixed_str("desc dp_desc", 256)?,
            }),
            ofpmp::FLOW => {
                let mut v = Vec::new();
                while !r.is_empty() {
                    v.push(FlowStats::decode(r)?);
                }
                B::Flow(v)
            }
            ofpmp::AGGREGATE => {
                let a = AggregateStats {
                    packet_count: r.u64("aggregate packet_count")?,
                    byte_count: r.u64("aggregate byte_count")?,
                    flow_count: r.u32("aggregate flow_count")?,
                };
                r.skip("aggregate pad", 4)?;
                B::Aggregate(a)
            }
            ofpmp::TABLE => {
                let mut v = Vec::new();
                while !r.is_empty() {
                    let table_id = r.u8("table stats table_id")?;
                    r.skip("table stats pad", 3)?;
                    v.push(TableStats {
                        table_id,
                        active_count: r.u32("table stats active_count")?,
                        lookup_count: r.u64("table stats lookup_count")?,
                        matched_count: r.u64("table stats matched_count")?,
                    });
                }
                B::Table(v)
            }
            ofpmp::PORT_STATS => {
                let mut v = Vec::new();
                while !r.is_empty() {
                    let port_no = r.u32("port stats port_no")?;
                    r.skip("port stats pad", 4)?;
                    let mut c = [0u64; 12];
                    for x in &mut c {
                        *x = r.u64("port stats counter")?;
                    }
                    v.push(PortStats {
                        port_no,
                        rx_packets: c[0],
                        tx_packets: c[1],
                        rx_bytes: c[2],
                        tx_bytes: c[3],
                        rx_dropped: c[4],
                        tx_dropped: c[5],
                        rx_errors: c[6],
                        tx_errors: c[7],
                        rx_frame_err: c[8],
                        rx_over_err: c[9],
                        rx_crc_err: c[10],
                        collisions: c[11],
                        duration_sec: r.u32("port stats duration_sec")?,
                        duration_nsec: r.u32("port stats duration_nsec")?,
                    });
                }
                B::PortStats(v)
            }
            ofpmp::PORT_DESC => {
                let mut v = Vec::new();
                while !r.is_empty() {
                    v.push(PortDesc::decode(r)?);
                }
                B::PortDesc(v)
            }
            ofpmp::GROUP => {
                let mut v = Vec::new();
                while !r.is_empty() {
                    v.push(GroupStats::decode(r)?);
                }
                B::GroupStats(v)
            }
            ofpmp::GROUP_DESC => {
                let mut v = Vec::new();
                while !r.is_empty() {
                    v.push(GroupDesc::decode(r)?);
                }
                B::GroupDesc(v)
            }
            ofpmp::EXPERIMENTER if is_onf_flow_monitor(r) => {
                r.skip("flow monitor experimenter header", 8)?;
                B::FlowMonitor(flow_monitor::decode_updates(r)?)
            }
            t => B::Other {
                mp_type: t,
                body: r.rest(),
            },
        };
        Ok(MultipartReply { flags, body })
    }
}
