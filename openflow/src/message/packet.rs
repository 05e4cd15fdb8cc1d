//! Packets between controller and switch: OFPT_PACKET_IN, OFPT_PACKET_OUT, and
//! OFPT_FLOW_REMOVED (a flow's last words).

use bytes::{BufMut, Bytes, BytesMut};

use crate::action::Action;
use crate::matching::Match;
use crate::port;
use crate::wire::{Reader, patch_len16, put_zeros};
use crate::{Error, Result};

/// OFPT_PACKET_IN.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PacketIn {
    /// Buffer id, or [`port::NO_BUFFER`] (OVS never buffers).
    pub buffer_id: u32,
    /// Full length of the packet.
    pub total_len: u16,
    /// OFPR_* reason (0 no match, 1 action, 2 invalid TTL).
    pub reason: u8,
    /// Table the packet was looked up in.
    pub table_id: u8,
    /// Cookie of the flow that sent it.
    pub cookie: u64,
    /// Packet metadata (in_port, registers, tunnel fields...).
    pub match_: Match,
    /// The packet (possibly truncated to `max_len`).
    pub data: Bytes,
}

impl PacketIn {
    pub(crate) fn encode_body(&self, out: &mut BytesMut) -> Result<()> {
        out.put_u32(self.buffer_id);
        out.put_u16(self.total_len);
        out.put_u8(self.reason);
        out.put_u8(self.table_id);
        out.put_u64(self.cookie);
        self.match_.encode(out)?;
        put_zeros(out, 2);
        out.put_slice(&self.data);
        Ok(())
    }

    pub(crate) fn decode_body(r: &mut Reader) -> Result<PacketIn> {
        let buffer_id = r.u32("packet_in buffer_id")?;
        let total_len = r.u16("packet_in total_len")?;
        let reason = r.u8("packet_in reason")?;
        let table_id = r.u8("packet_in table_id")?;
        let cookie = r.u64("packet_in cookie")?;
        let match_ = Match::decode(r)?;
        r.skip("packet_in pad", 2)?;
        Ok(PacketIn {
            buffer_id,
            total_len,
            reason,
            table_id,
            cookie,
            match_,
            data: r.rest(),
        })
    }
}

/// OFPT_PACKET_OUT: inject a packet and run actions on it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PacketOut {
    /// Buffered packet, or [`port::NO_BUFFER`] to send `data`.
    pub buffer_id: u32,
    /// Port the packet is considered to come from ([`port::CONTROLLER`] for none).
    pub in_port: u32,
    /// Actions; `output:TABLE` ([`port::TABLE`]) runs it through the pipeline.
    pub actions: Vec<Action>,
    /// The packet.
    pub data: Bytes,
}

impl PacketOut {
    /// A packet-out of `data` applying `actions`, coming from the controller.
    pub fn new(data: impl Into<Bytes>, actions: Vec<Action>) -> PacketOut {
        PacketOut {
            buffer_id: port::NO_BUFFER,
            in_port: port::CONTROLLER,
            actions,
            data: data.into(),
        }
    }

    pub(crate) fn encode_body(&self, out: &mut BytesMut) -> Result<()> {
        out.put_u32(self.buffer_id);
        out.put_u32(self.in_port);
        let len_at = out.len();
        out.put_u16(0);
        put_zeros(out, 6);
        let start = out.len();
        Action::encode_list(&self.actions, out)?;
        let alen = out.len() - start;
        patch_len16(out, len_at, alen, "packet_out actions")?;
        out.put_slice(&self.data);
        Ok(())
    }

    pub(crate) fn decode_body(r: &mut Reader) -> Result<PacketOut> {
        let buffer_id = r.u32("packet_out buffer_id")?;
        let in_port = r.u32("packet_out in_port")?;
        let alen = r.u16("packet_out actions_len")? as usize;
        r.skip("packet_out pad", 6)?;
        if !alen.is_multiple_of(8) {
            return Err(Error::BadLength {
                what: "packet_out actions",
                length: alen,
                reason: "not a multiple of 8",
            });
        }
        let mut a = r.sub("packet_out actions", alen)?;
        let actions = Action::decode_list(&mut a)?;
        Ok(PacketOut {
            buffer_id,
            in_port,
            actions,
            data: r.rest(),
        })
    }
}

/// OFPT_FLOW_REMOVED.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FlowRemoved {
    /// Cookie of the flow.
    pub cookie: u64,
    /// Priority.
    pub priority: u16,
    /// OFPRR_* reason (0 idle timeout, 1 hard timeout, 2 delete, 3 group delete).
    pub reason: u8,
    /// Table.
    pub table_id: u8,
    /// Seconds the flow lived.
    pub duration_sec: u32,
    /// Nanoseconds beyond `duration_sec`.
    pub duration_nsec: u32,
    /// Idle timeout.
    pub idle_timeout: u16,
    /// Hard timeout.
    pub hard_timeout: u16,
    /// Packets matched.
    pub packet_count: u64,
    /// Bytes matched.
    pub byte_count: u64,
    /// Match.
    pub match_: Match,
}

impl FlowRemoved {
    pub(crate) fn encode_body(&self, out: &mut BytesMut) -> Result<()> {
        out.put_u64(self.cookie);
        out.put_u16(self.priority);
        out.put_u8(self.reason);
        out.put_u8(self.table_id);
        out.put_u32(self.duration_sec);
        out.put_u32(self.duration_nsec);
        out.put_u16(self.idle_timeout);
        out.put_u16(self.hard_timeout);
        out.put_u64(self.packet_count);
        out.put_u64(self.byte_count);
        self.match_.encode(out)
    }

    pub(crate) fn decode_body(r: &mut Reader) -> Result<FlowRemoved> {
        Ok(FlowRemoved {
            cookie: r.u64("flow_removed cookie")?,
            priority: r.u16("flow_removed priority")?,
            reason: r.u8("flow_removed reason")?,
            table_id: r.u8("flow_removed table_id")?,
            duration_sec: r.u32("flow_removed duration_sec")?,
            duration_nsec: r.u32("flow_removed duration_nsec")?,
            idle_timeout: r.u16("flow_removed idle_timeout")?,
            hard_timeout: r.u16("flow_removed hard_timeout")?,
            packet_count: r.u64("flow_removed packet_count")?,
            byte_count: r.u64("flow_removed byte_count")?,
            match_: Match::decode(r)?,
        })
    }
}
