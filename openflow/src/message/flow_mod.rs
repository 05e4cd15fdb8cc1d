//! OFPT_FLOW_MOD: add, modify and delete flows.

use bytes::{BufMut, BytesMut};

use crate::instruction::Instruction;
use crate::matching::Match;
use crate::message::Message;
use crate::port;
use crate::wire::{Reader, put_zeros};
use crate::{Error, Result};

/// Priority OVS gives flows that do not name one (OFP_DEFAULT_PRIORITY).
pub const DEFAULT_PRIORITY: u16 = 0x8000;

/// OFPFF_* flow-mod flags.
pub mod flags {
    /// Send OFPT_FLOW_REMOVED when the flow expires or is deleted.
    pub const SEND_FLOW_REM: u16 = 1 << 0;
    /// Refuse the add if it overlaps an existing flow of the same priority.
    pub const CHECK_OVERLAP: u16 = 1 << 1;
    /// Reset counters on modify.
    pub const RESET_COUNTS: u16 = 1 << 2;
    /// Do not keep packet counts.
    pub const NO_PKT_COUNTS: u16 = 1 << 3;
    /// Do not keep byte counts.
    pub const NO_BYT_COUNTS: u16 = 1 << 4;
}

/// The flow-mod command (`enum ofp_flow_mod_command`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum FlowModCommand {
    /// OFPFC_ADD: add, replacing an identical match+priority flow.
    #[default]
    Add,
    /// OFPFC_MODIFY: change the instructions of all matching flows.
    Modify,
    /// OFPFC_MODIFY_STRICT: change the flow with exactly this match and priority.
    ModifyStrict,
    /// OFPFC_DELETE: delete all matching flows.
    Delete,
    /// OFPFC_DELETE_STRICT: delete the flow with exactly this match and priority.
    DeleteStrict,
}

impl FlowModCommand {
    fn to_wire(self) -> u8 {
        match self {
            FlowModCommand::Add => 0,
            FlowModCommand::Modify => 1,
            FlowModCommand::ModifyStrict => 2,
            FlowModCommand::Delete => 3,
            FlowModCommand::DeleteStrict => 4,
        }
    }

    fn from_wire(v: u8) -> Result<FlowModCommand> {
        Ok(match v {
            0 => FlowModCommand::Add,
            1 => FlowModCommand::Modify,
            2 => FlowModCommand::ModifyStrict,
            3 => FlowModCommand::Delete,
            4 => FlowModCommand::DeleteStrict,
            v => return Err(Error::bad_value("flow_mod command", format!("{v}"))),
        })
    }
}

/// A flow-mod.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FlowMod {
    /// Cookie of the flow (add), or to filter on with `cookie_mask` (modify/delete).
    pub cookie: u64,
    /// Cookie bits that must match for modify/delete; 0 = no cookie filter.
    pub cookie_mask: u64,
    /// Table; [`port::TABLE_ALL`] for delete in every table.
    pub table_id: u8,
    /// What to do.
    pub command: FlowModCommand,
    /// Seconds idle before expiry (0 = never).
    pub idle_timeout: u16,
    /// Seconds before expiry (0 = never).
    pub hard_timeout: u16,
    /// Priority.
    pub priority: u16,
    /// Buffered packet to apply to, or [`port::NO_BUFFER`].
    pub buffer_id: u32,
    /// For delete: only flows outputting to this port ([`port::ANY`] = no filter).
    pub out_port: u32,
    /// For delete: only flows using this group ([`port::GROUP_ANY`] = no filter).
    pub out_group: u32,
    /// [`flags`] bits.
    pub flags: u16,
    /// Match.
    pub match_: Match,
    /// Instructions.
    pub instructions: Vec<Instruction>,
}

impl Default for FlowMod {
    fn default() -> FlowMod {
        FlowMod {
            cookie: 0,
            cookie_mask: 0,
            table_id: 0,
            command: FlowModCommand::Add,
            idle_timeout: 0,
            hard_timeout: 0,
            priority: DEFAULT_PRIORITY,
            buffer_id: port::NO_BUFFER,
            out_port: port::ANY,
            out_group: port::GROUP_ANY,
            flags: 0,
            match_: Match::new(),
            instructions: Vec::new(),
        }
    }
}

impl FlowMod {
    /// An OFPFC_ADD.
    pub fn add(
        table_id: u8,
        priority: u16,
        match_: Match,
        instructions: Vec<Instruction>,
    ) -> FlowMod {
        FlowMod {
            table_id,
            priority,
            match_,
            instructions,
            ..FlowMod::default()
        }
    }

    /// An OFPFC_DELETE of every flow in `table_id` (or all tables) that `match_` covers.
    pub fn delete(table_id: u8, match_: Match) -> FlowMod {
        FlowMod {
            table_id,
            command: FlowModCommand::Delete,
            match_,
            ..FlowMod::default()
        }
    }

    /// An OFPFC_DELETE_STRICT of the flow with exactly this match and priority.
    pub fn delete_strict(table_id: u8, priority: u16, match_: Match) -> FlowMod {
        FlowMod {
            table_id,
            priority,
            command: FlowModCommand::DeleteStrict,
            match_,
            ..FlowMod::default()
        }
    }

    /// An OFPFC_DELETE in all tables of flows whose cookie matches `cookie/mask`.
    pub fn delete_by_cookie(cookie: u64, cookie_mask: u64) -> FlowMod {
        FlowMod {
            table_id: port::TABLE_ALL,
            command: FlowModCommand::Delete,
            cookie,
            cookie_mask,
            ..FlowMod::default()
        }
    }

    /// Sets the cookie (builder style).
    pub fn with_cookie(mut self, cookie: u64) -> FlowMod {
        self.cookie = cookie;
        self
    }

    /// This flow-mod as a [`Message::Encoded`], with its match and instructions given
    /// already encoded — `match_wire` as [`Match::to_wire`] writes it (padding included),
    /// `instructions_wire` as [`Instruction::encode_list`] does — instead of
    /// `self.match_` and `self.instructions` (which are not looked at). The bytes sent are
    /// exactly those [`Message::FlowMod`] would send.
    pub fn encoded(&self, match_wire: &[u8], instructions_wire: &[u8]) -> Message {
        let mut out = BytesMut::with_capacity(40 + match_wire.len() + instructions_wire.len());
        self.encode_head(&mut out);
        out.put_slice(match_wire);
        out.put_slice(instructions_wire);
        Message::Encoded {
            msg_type: crate::message::ofpt::FLOW_MOD,
            body: out.freeze(),
        }
    }

    fn encode_head(&self, out: &mut BytesMut) {
        out.put_u64(self.cookie);
        out.put_u64(self.cookie_mask);
        out.put_u8(self.table_id);
        out.put_u8(self.command.to_wire());
        out.put_u16(self.idle_timeout);
        out.put_u16(self.hard_timeout);
        out.put_u16(self.priority);
        out.put_u32(self.buffer_id);
        out.put_u32(self.out_port);
        out.put_u32(self.out_group);
        out.put_u16(self.flags);
        put_zeros(out, 2);
    }

    pub(crate) fn encode_body(&self, out: &mut BytesMut) -> Result<()> {
        self.encode_head(out);
        self.match_.encode(out)?;
        Instruction::encode_list(&self.instructions, out)
    }

    pub(crate) fn decode_body(r: &mut Reader) -> Result<FlowMod> {
        let cookie = r.u64("flow_mod cookie")?;
        let cookie_mask = r.u64("flow_mod cookie_mask")?;
        let table_id = r.u8("flow_mod table_id")?;
        let command = FlowModCommand::from_wire(r.u8("flow_mod command")?)?;
        let idle_timeout = r.u16("flow_mod idle_timeout")?;
        let hard_timeout = r.u16("flow_mod hard_timeout")?;
        let priority = r.u16("flow_mod priority")?;
        let buffer_id = r.u32("flow_mod buffer_id")?;
        let out_port = r.u32("flow_mod out_port")?;
        let out_group = r.u32("flow_mod out_group")?;
        let flags = r.u16("flow_mod flags")?;
        r.skip("flow_mod pad", 2)?;
        let match_ = Match::decode(r)?;
        let instructions = Instruction::decode_list(r)?;
        Ok(FlowMod {
            cookie,
            cookie_mask,
            table_id,
            command,
            idle_timeout,
            hard_timeout,
            priority,
            buffer_id,
            out_port,
            out_group,
            flags,
            match_,
            instructions,
        })
    }
}
