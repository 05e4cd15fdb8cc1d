//! OFPT_METER_MOD (OpenFlow 1.3 §7.3.4.4): rate limiters, e.g. for every path that sends
//! packets to the controller.

use bytes::{BufMut, Bytes, BytesMut};

use crate::wire::{Reader, put_zeros};
use crate::{Error, Result};

/// OFPMF_* meter flags.
pub mod flags {
    /// Rates are in kb/s.
    pub const KBPS: u16 = 1;
    /// Rates are in packets/s.
    pub const PKTPS: u16 = 2;
    /// Bands have a burst size.
    pub const BURST: u16 = 4;
    /// Collect statistics.
    pub const STATS: u16 = 8;
}

/// Meter-mod command (`enum ofp_meter_mod_command`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum MeterModCommand {
    /// OFPMC_ADD.
    #[default]
    Add,
    /// OFPMC_MODIFY.
    Modify,
    /// OFPMC_DELETE.
    Delete,
}

/// A meter band.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MeterBand {
    /// OFPMBT_DROP: drop what exceeds `rate`.
    Drop {
        /// Rate (unit per the meter's flags).
        rate: u32,
        /// Burst size (with [`flags::BURST`]).
        burst_size: u32,
    },
    /// OFPMBT_DSCP_REMARK: raise the drop precedence of what exceeds `rate`.
    DscpRemark {
        /// Rate.
        rate: u32,
        /// Burst size.
        burst_size: u32,
        /// Precedence levels to add.
        prec_level: u8,
    },
    /// Another band type, kept verbatim.
    Other {
        /// OFPMBT_* type.
        band_type: u16,
        /// Rate.
        rate: u32,
        /// Burst size.
        burst_size: u32,
        /// The rest of the band.
        data: Bytes,
    },
}

/// A meter-mod.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MeterMod {
    /// Add, modify or delete.
    pub command: MeterModCommand,
    /// [`flags`] bits.
    pub flags: u16,
    /// Meter id (1..=0xffff0000; 0xffffffff = all, for delete).
    pub meter_id: u32,
    /// Bands.
    pub bands: Vec<MeterBand>,
}

impl MeterMod {
    /// A packets-per-second meter that drops above `rate` (with a burst allowance).
    pub fn drop_above_pps(meter_id: u32, rate: u32, burst_size: u32) -> MeterMod {
        MeterMod {
            command: MeterModCommand::Add,
            flags: flags::PKTPS | flags::BURST | flags::STATS,
            meter_id,
            bands: vec![MeterBand::Drop { rate, burst_size }],
        }
    }

    pub(crate) fn encode_body(&self, out: &mut BytesMut) -> Result<()> {
        out.put_u16(match self.command {
            MeterModCommand::Add => 0,
            MeterModCommand::Modify => 1,
            MeterModCommand::Delete => 2,
        });
        out.put_u16(self.flags);
        out.put_u32(self.meter_id);
        for b in &self.bands {
            match b {
                MeterBand::Drop { rate, burst_size } => {
                    out.put_u16(1);
                    out.put_u16(16);
                    out.put_u32(*rate);
                    out.put_u32(*burst_size);
                    put_zeros(out, 4);
                }
                MeterBand::DscpRemark {
                    rate,
                    burst_size,
                    prec_level,
                } => {
                    out.put_u16(2);
                    out.put_u16(16);
                    out.put_u32(*rate);
                    out.put_u32(*burst_size);
                    out.put_u8(*prec_level);
                    put_zeros(out, 3);
                }
                MeterBand::Other {
                    band_type,
                    rate,
                    burst_size,
                    data,
                } => {
                    let len = 12 + data.len();
                    if !len.is_multiple_of(8) || len > usize::from(u16::MAX) {
                        return Err(Error::BadLength {
                            what: "meter band",
                            length: len,
                            reason: "must be a multiple of 8 that fits 16 bits",
                        });
                    }
                    out.put_u16(*band_type);
                    out.put_u16(len as u16);
                    out.put_u32(*rate);
                    out.put_u32(*burst_size);
                    out.put_slice(data);
                }
            }
        }
        Ok(())
    }

    pub(crate) fn decode_body(r: &mut Reader) -> Result<MeterMod> {
        let command = match r.u16("meter_mod command")? {
            0 => MeterModCommand::Add,
            1 => MeterModCommand::Modify,
            2 => MeterModCommand::Delete,
            v => return Err(Error::bad_value("meter_mod command", format!("{v}"))),
        };
        let flags = r.u16("meter_mod flags")?;
        let meter_id = r.u32("meter_mod meter_id")?;
        let mut bands = Vec::new();
        while !r.is_empty() {
            let len = r.peek_u16("meter band length", 2)? as usize;
            if len < 16 || !len.is_multiple_of(8) {
                return Err(Error::BadLength {
                    what: "meter band",
                    length: len,
                    reason: "must be a multiple of 8, at least 16",
                });
            }
            let mut b = r.sub("meter band", len)?;
            let band_type = b.u16("meter band type")?;
            b.skip("meter band length", 2)?;
            let rate = b.u32("meter band rate")?;
            let burst_size = b.u32("meter band burst_size")?;
            bands.push(match (band_type, len) {
                (1, 16) => MeterBand::Drop { rate, burst_size },
                (2, 16) => MeterBand::DscpRemark {
                    rate,
                    burst_size,
                    prec_level: b.u8("meter band prec_level")?,
                },
                _ => MeterBand::Other {
                    band_type,
                    rate,
                    burst_size,
                    data: b.rest(),
                },
            });
        }
        Ok(MeterMod {
            command,
            flags,
            meter_id,
            bands,
        })
    }
}
