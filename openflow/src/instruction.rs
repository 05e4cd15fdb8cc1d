//! Instructions (OpenFlow 1.3 §7.2.4): what a flow does with a matching packet.

use bytes::{BufMut, Bytes, BytesMut};

use crate::action::Action;
use crate::wire::{Reader, patch_len16, put_zeros};
use crate::{Error, Result};

mod ofpit {
    pub const GOTO_TABLE: u16 = 1;
    pub const WRITE_METADATA: u16 = 2;
    pub const WRITE_ACTIONS: u16 = 3;
    pub const APPLY_ACTIONS: u16 = 4;
    pub const CLEAR_ACTIONS: u16 = 5;
    pub const METER: u16 = 6;
}

/// An instruction.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Instruction {
    /// OFPIT_APPLY_ACTIONS: apply now, in order (`actions=...` in ovs-ofctl).
    ApplyActions(Vec<Action>),
    /// OFPIT_WRITE_ACTIONS: merge into the action set (`write_actions(...)`).
    WriteActions(Vec<Action>),
    /// OFPIT_CLEAR_ACTIONS: empty the action set (`clear_actions`).
    ClearActions,
    /// OFPIT_GOTO_TABLE: continue in a later table (`goto_table:N`).
    GotoTable(u8),
    /// OFPIT_WRITE_METADATA (`write_metadata:value/mask`).
    WriteMetadata {
        /// Bits to write.
        value: u64,
        /// Which bits to write.
        mask: u64,
    },
    /// OFPIT_METER (`meter:N`).
    Meter(u32),
    /// An instruction type this crate does not model (including experimenter ones), kept
    /// verbatim.
    Unknown {
        /// OFPIT_* type.
        instruction_type: u16,
        /// Body after the 4-byte type/length header.
        data: Bytes,
    },
}

impl Instruction {
    /// Appends the instruction.
    pub fn encode(&self, out: &mut BytesMut) -> Result<()> {
        let start = out.len();
        match self {
            Instruction::GotoTable(t) => {
                out.put_u16(ofpit::GOTO_TABLE);
                out.put_u16(8);
                out.put_u8(*t);
                put_zeros(out, 3);
            }
            Instruction::WriteMetadata { value, mask } => {
                out.put_u16(ofpit::WRITE_METADATA);
                out.put_u16(24);
                put_zeros(out, 4);
                out.put_u64(*value);
                out.put_u64(*mask);
            }
            Instruction::ApplyActions(a) | Instruction::WriteActions(a) => {
                let t = if matches!(self, Instruction::ApplyActions(_)) {
                    ofpit::APPLY_ACTIONS
                } else {
                    ofpit::WRITE_ACTIONS
                };
                out.put_u16(t);
                out.put_u16(0);
                put_zeros(out, 4);
                Action::encode_list(a, out)?;
                let len = out.len() - start;
                patch_len16(out, start + 2, len, "instruction actions")?;
            }
            Instruction::ClearActions => {
                out.put_u16(ofpit::CLEAR_ACTIONS);
                out.put_u16(8);
                put_zeros(out, 4);
            }
            Instruction::Meter(m) => {
                out.put_u16(ofpit::METER);
                out.put_u16(8);
                out.put_u32(*m);
            }
            Instruction::Unknown {
                instruction_type,
                data,
            } => {
                out.put_u16(*instruction_type);
                out.put_u16(0);
                out.put_slice(data);
                let len = out.len() - start;
                if !len.is_multiple_of(8) {
                    return Err(Error::BadLength {
                        what: "unknown instruction",
                        length: len,
                        reason: "data must make it a multiple of 8 bytes",
                    });
                }
                patch_len16(out, start + 2, len, "instruction")?;
            }
        }
        Ok(())
    }

    /// Appends a list of instructions.
    pub fn encode_list(list: &[Instruction], out: &mut BytesMut) -> Result<()> {
        list.iter().try_for_each(|i| i.encode(out))
    }

    pub(crate) fn decode_list(r: &mut Reader) -> Result<Vec<Instruction>> {
        let mut v = Vec::new();
        while !r.is_empty() {
            v.push(Instruction::decode(r)?);
        }
        Ok(v)
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<Instruction> {
        let len = r.peek_u16("instruction length", 2)? as usize;
        if len < 8 || !len.is_multiple_of(8) {
            return Err(Error::BadLength {
                what: "instruction",
                length: len,
                reason: "must be a multiple of 8, at least 8",
            });
        }
        let mut i = r.sub("instruction", len)?;
        let t = i.u16("instruction type")?;
        i.skip("instruction length", 2)?;
        Ok(match t {
            ofpit::GOTO_TABLE => Instruction::GotoTable(i.u8("goto_table table")?),
            ofpit::WRITE_METADATA => {
                i.skip("write_metadata pad", 4)?;
                let value = i.u64("write_metadata value")?;
                let mask = i.u64("write_metadata mask")?;
                Instruction::WriteMetadata { value, mask }
            }
            ofpit::WRITE_ACTIONS | ofpit::APPLY_ACTIONS => {
                i.skip("instruction pad", 4)?;
                let a = Action::decode_list(&mut i)?;
                if t == ofpit::APPLY_ACTIONS {
                    Instruction::ApplyActions(a)
                } else {
                    Instruction::WriteActions(a)
                }
            }
            ofpit::CLEAR_ACTIONS => Instruction::ClearActions,
            ofpit::METER => Instruction::Meter(i.u32("meter id")?),
            t => Instruction::Unknown {
                instruction_type: t,
                data: i.rest(),
            },
        })
    }
}
