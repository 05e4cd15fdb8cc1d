//! Flow monitors: the switch reports flows added, modified and deleted. Changes made by
//! other connections (other controllers, `ovs-ofctl`) come as full updates; changes made
//! by the monitoring connection itself come in full with [`flags::OWN`], else as one
//! abbreviated update (the xid of the flow-mod) per flow-mod.
//!
//! On an OpenFlow 1.3 connection ovs-vswitchd (3.x) speaks the ONF extension, not the
//! Nicira one: the request and the updates are `ONFST_FLOW_MONITOR` multipart messages
//! (`OFPMP_EXPERIMENTER`, experimenter 0x4f4e4600, type 1870) whose bodies are the
//! Nicira structures (`nx_flow_monitor_request`, `nx_flow_update_full`/`_abbrev`) with an
//! OXM `ofp_match` instead of an NXM match and a 32-bit `out_port`. vswitchd answers an
//! `NXST_FLOW_MONITOR` sent over 1.3 with OFPBRC_BAD_EXP_TYPE. Updates the switch sends on
//! its own are multipart replies with xid 0. Pausing, resuming and cancelling are the
//! `ONFT_FLOW_MONITOR_*` experimenter messages (1870..1872) on 1.3; the Nicira
//! `NXT_FLOW_MONITOR_*` forms (21..23) are decoded too, for completeness.

use bytes::{BufMut, BytesMut};

use crate::instruction::Instruction;
use crate::matching::Match;
use crate::port;
use crate::wire::{Reader, patch_len16, put_zeros};
use crate::{Error, Result};

/// ONFMP_FLOW_MONITOR: the experimenter multipart type of request and reply.
pub const ONFMP_FLOW_MONITOR: u32 = 1870;
/// ONFT_FLOW_MONITOR_CANCEL (controller to switch, body: monitor id).
pub const ONFT_FLOW_MONITOR_CANCEL: u32 = 1870;
/// ONFT_FLOW_MONITOR_PAUSED (switch to controller: updates are being dropped).
pub const ONFT_FLOW_MONITOR_PAUSED: u32 = 1871;
/// ONFT_FLOW_MONITOR_RESUMED (switch to controller: updates flow again).
pub const ONFT_FLOW_MONITOR_RESUMED: u32 = 1872;
/// NXT_FLOW_MONITOR_CANCEL.
pub const NXT_FLOW_MONITOR_CANCEL: u32 = 21;
/// NXT_FLOW_MONITOR_PAUSED.
pub const NXT_FLOW_MONITOR_PAUSED: u32 = 22;
/// NXT_FLOW_MONITOR_RESUMED.
pub const NXT_FLOW_MONITOR_RESUMED: u32 = 23;

/// NXFMF_* (equal to ONFFMF_*) flags of a [`FlowMonitorRequest`].
pub mod flags {
    /// Report the flows that match when the monitor is created, in the reply.
    pub const INITIAL: u16 = 1 << 0;
    /// Report flows added.
    pub const ADD: u16 = 1 << 1;
    /// Report flows deleted.
    pub const DELETE: u16 = 1 << 2;
    /// Report flows modified.
    pub const MODIFY: u16 = 1 << 3;
    /// Include the instructions in full updates.
    pub const ACTIONS: u16 = 1 << 4;
    /// Report changes this connection makes in full. Without it the switch still
    /// reports them, but each flow-mod of this connection that changes monitored flows
    /// only as one [`FlowUpdate::Abbrev`](super::FlowUpdate::Abbrev) naming its xid.
    pub const OWN: u16 = 1 << 5;
}

/// Which extension frames a flow-monitor control message: ONF on OpenFlow 1.3 (what
/// ovs-vswitchd accepts and sends there), Nicira on OpenFlow 1.0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MonitorExt {
    /// `ONFT_FLOW_MONITOR_*`, experimenter 0x4f4e4600.
    Onf,
    /// `NXT_FLOW_MONITOR_*`, experimenter 0x00002320.
    Nicira,
}

/// One monitor of an ONFST_FLOW_MONITOR request (`nx_flow_monitor_request` with an OXM
/// match and a 32-bit port).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FlowMonitorRequest {
    /// Monitor id chosen by the controller, unique on the connection.
    pub id: u32,
    /// [`flags`]; at least one of ADD, DELETE, MODIFY.
    pub flags: u16,
    /// Only flows outputting to this port, or [`port::ANY`].
    pub out_port: u32,
    /// One table, or [`port::TABLE_ALL`].
    pub table_id: u8,
    /// Only flows this match covers (empty: all).
    pub match_: Match,
}

impl FlowMonitorRequest {
    /// A monitor of every flow of every table with `flags`.
    pub fn all(id: u32, flags: u16) -> FlowMonitorRequest {
        FlowMonitorRequest {
            id,
            flags,
            out_port: port::ANY,
            table_id: port::TABLE_ALL,
            match_: Match::new(),
        }
    }

    pub(crate) fn encode(&self, out: &mut BytesMut) -> Result<()> {
        out.put_u32(self.id);
        out.put_u16(self.flags);
        let match_len_at = out.len();
        out.put_u16(0);
        out.put_u32(self.out_port);
        out.put_u8(self.table_id);
        put_zeros(out, 3);
        let match_at = out.len();
        self.match_.encode(out)?;
        // match_len is the ofp_match's own length (without its padding).
        let len = u16::from_be_bytes([out[match_at + 2], out[match_at + 3]]);
        patch_len16(out, match_len_at, len.into(), "flow monitor match")
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<FlowMonitorRequest> {
        let id = r.u32("flow monitor request id")?;
        let flags = r.u16("flow monitor request flags")?;
        let match_len = r.u16("flow monitor request match_len")?;
        let out_port = r.u32("flow monitor request out_port")?;
        let table_id = r.u8("flow monitor request table_id")?;
        r.skip("flow monitor request zeros", 3)?;
        check_match_len(r, match_len, "flow monitor request match_len")?;
        let match_ = Match::decode(r)?;
        Ok(FlowMonitorRequest {
            id,
            flags,
            out_port,
            table_id,
            match_,
        })
    }
}

/// The `match_len` field must agree with the `ofp_match` length that follows it.
fn check_match_len(r: &Reader, match_len: u16, what: &'static str) -> Result<()> {
    let actual = r.peek_u16("ofp_match length", 2)?;
    if actual != match_len {
        return Err(Error::BadLength {
            what,
            length: match_len.into(),
            reason: "differs from the length of the ofp_match that follows",
        });
    }
    Ok(())
}

/// What happened to the flow of a [`FlowUpdateFull`] (NXFME_*).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlowUpdateEvent {
    /// NXFME_ADDED (0): a flow was added, or reported by [`flags::INITIAL`].
    Added,
    /// NXFME_DELETED (1): a flow was removed; `reason` is an OFPRR_* value.
    Deleted,
    /// NXFME_MODIFIED (2): a flow's instructions (or cookie) changed.
    Modified,
}

const NXFME_ADDED: u16 = 0;
const NXFME_DELETED: u16 = 1;
const NXFME_MODIFIED: u16 = 2;
const NXFME_ABBREV: u16 = 3;

/// Length of `nx_flow_update_full` before its match.
const FULL_FIXED: usize = 24;
/// Length of `nx_flow_update_abbrev`.
const ABBREV_LEN: usize = 8;

/// A complete flow update (`nx_flow_update_full`, OXM match, OpenFlow 1.3 instructions).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FlowUpdateFull {
    /// What happened.
    pub event: FlowUpdateEvent,
    /// For [`FlowUpdateEvent::Deleted`], the OFPRR_* reason (2: deleted by a flow-mod);
    /// 0 otherwise.
    pub reason: u16,
    /// Priority.
    pub priority: u16,
    /// Idle timeout.
    pub idle_timeout: u16,
    /// Hard timeout.
    pub hard_timeout: u16,
    /// Table the flow is in.
    pub table_id: u8,
    /// Cookie.
    pub cookie: u64,
    /// Match.
    pub match_: Match,
    /// The flow's instructions, present only when the monitor has [`flags::ACTIONS`]
    /// (an empty list otherwise, and for a flow whose actions are `drop`).
    pub instructions: Vec<Instruction>,
}

/// One update of a flow monitor reply.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FlowUpdate {
    /// A flow changed.
    Full(FlowUpdateFull),
    /// NXFME_ABBREV: this connection's own message `xid` changed monitored flows (sent
    /// instead of full updates when the monitor lacks [`flags::OWN`]).
    Abbrev {
        /// Xid of the flow-mod that made the change.
        xid: u32,
    },
}

impl FlowUpdate {
    pub(crate) fn encode(&self, out: &mut BytesMut) -> Result<()> {
        let start = out.len();
        match self {
            FlowUpdate::Abbrev { xid } => {
                out.put_u16(ABBREV_LEN as u16);
                out.put_u16(NXFME_ABBREV);
                out.put_u32(*xid);
                Ok(())
            }
            FlowUpdate::Full(f) => {
                out.put_u16(0);
                out.put_u16(match f.event {
                    FlowUpdateEvent::Added => NXFME_ADDED,
                    FlowUpdateEvent::Deleted => NXFME_DELETED,
                    FlowUpdateEvent::Modified => NXFME_MODIFIED,
                });
                out.put_u16(f.reason);
                out.put_u16(f.priority);
                out.put_u16(f.idle_timeout);
                out.put_u16(f.hard_timeout);
                let match_len_at = out.len();
                out.put_u16(0);
                out.put_u8(f.table_id);
                out.put_u8(0);
                out.put_u64(f.cookie);
                let match_at = out.len();
                f.match_.encode(out)?;
                let mlen = u16::from_be_bytes([out[match_at + 2], out[match_at + 3]]);
                patch_len16(out, match_len_at, mlen.into(), "flow update match")?;
                Instruction::encode_list(&f.instructions, out)?;
                let len = out.len() - start;
                patch_len16(out, start, len, "flow update")
            }
        }
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<FlowUpdate> {
        let len = usize::from(r.peek_u16("flow update length", 0)?);
        if len < ABBREV_LEN || !len.is_multiple_of(8) {
            return Err(Error::BadLength {
                what: "flow update",
                length: len,
                reason: "must be a multiple of 8, at least 8",
            });
        }
        let mut u = r.sub("flow update", len)?;
        u.skip("flow update length", 2)?;
        let event = u.u16("flow update event")?;
        let event = match event {
            NXFME_ABBREV => {
                if len != ABBREV_LEN {
                    return Err(Error::BadLength {
                        what: "abbreviated flow update",
                        length: len,
                        reason: "must be exactly 8 bytes",
                    });
                }
                return Ok(FlowUpdate::Abbrev {
                    xid: u.u32("flow update xid")?,
                });
            }
            NXFME_ADDED => FlowUpdateEvent::Added,
            NXFME_DELETED => FlowUpdateEvent::Deleted,
            NXFME_MODIFIED => FlowUpdateEvent::Modified,
            e => {
                return Err(Error::bad_value(
                    "flow update event",
                    format!("{e} (expected NXFME_ADDED..NXFME_ABBREV, 0..3)"),
                ));
            }
        };
        if len < FULL_FIXED {
            return Err(Error::BadLength {
                what: "full flow update",
                length: len,
                reason: "shorter than its 24-byte fixed part",
            });
        }
        let reason = u.u16("flow update reason")?;
        let priority = u.u16("flow update priority")?;
        let idle_timeout = u.u16("flow update idle_timeout")?;
        let hard_timeout = u.u16("flow update hard_timeout")?;
        let match_len = u.u16("flow update match_len")?;
        let table_id = u.u8("flow update table_id")?;
        u.skip("flow update pad", 1)?;
        let cookie = u.u64("flow update cookie")?;
        check_match_len(&u, match_len, "flow update match_len")?;
        let match_ = Match::decode(&mut u)?;
        let instructions = Instruction::decode_list(&mut u)?;
        Ok(FlowUpdate::Full(FlowUpdateFull {
            event,
            reason,
            priority,
            idle_timeout,
            hard_timeout,
            table_id,
            cookie,
            match_,
            instructions,
        }))
    }
}

/// Decodes every monitor of a request body (after the experimenter header).
pub(crate) fn decode_requests(r: &mut Reader) -> Result<Vec<FlowMonitorRequest>> {
    let mut v = Vec::new();
    while !r.is_empty() {
        v.push(FlowMonitorRequest::decode(r)?);
    }
    Ok(v)
}

/// Decodes every update of a reply body (after the experimenter header).
pub(crate) fn decode_updates(r: &mut Reader) -> Result<Vec<FlowUpdate>> {
    let mut v = Vec::new();
    while !r.is_empty() {
        v.push(FlowUpdate::decode(r)?);
    }
    Ok(v)
}
