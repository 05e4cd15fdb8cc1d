//! Bounds-checked reading of wire bytes and small encoding helpers shared by every codec
//! module. Every read names what it was reading so a truncated message yields an error an
//! operator can act on instead of a panic.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::Error;

/// A cursor over one message (or one nested structure) that never reads past its end.
#[derive(Debug, Clone)]
pub(crate) struct Reader {
    buf: Bytes,
}

impl Reader {
    pub(crate) fn new(buf: Bytes) -> Reader {
        Reader { buf }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn need(&self, what: &'static str, n: usize) -> Result<(), Error> {
        if self.buf.len() < n {
            Err(Error::Truncated {
                what,
                needed: n,
                available: self.buf.len(),
            })
        } else {
            Ok(())
        }
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, Error> {
        self.need(what, 1)?;
        Ok(self.buf.get_u8())
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, Error> {
        self.need(what, 2)?;
        Ok(self.buf.get_u16())
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, Error> {
        self.need(what, 4)?;
        Ok(self.buf.get_u32())
    }

    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, Error> {
        self.need(what, 8)?;
        Ok(self.buf.get_u64())
    }

    pub(crate) fn skip(&mut self, what: &'static str, n: usize) -> Result<(), Error> {
        self.need(what, n)?;
        self.buf.advance(n);
        Ok(())
    }

    pub(crate) fn bytes(&mut self, what: &'static str, n: usize) -> Result<Bytes, Error> {
        self.need(what, n)?;
        Ok(self.buf.split_to(n))
    }

    pub(crate) fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], Error> {
        self.need(what, N)?;
        let mut out = [0u8; N];
        self.buf.copy_to_slice(&mut out);
        Ok(out)
    }

    /// Splits off a nested structure of `n` bytes as its own reader.
    pub(crate) fn sub(&mut self, what: &'static str, n: usize) -> Result<Reader, Error> {
        Ok(Reader::new(self.bytes(what, n)?))
    }

    /// Everything left.
    pub(crate) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    /// Peeks at a big-endian u16 at `offset` without consuming.
    pub(crate) fn peek_u16(&self, what: &'static str, offset: usize) -> Result<u16, Error> {
        self.need(what, offset + 2)?;
        Ok(u16::from_be_bytes([self.buf[offset], self.buf[offset + 1]]))
    }

    /// A NUL-padded fixed-size string (ofp_desc, port names).
    pub(crate) fn fixed_str(&mut self, what: &'static str, n: usize) -> Result<String, Error> {
        let raw = self.bytes(what, n)?;
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        Ok(String::from_utf8_lossy(&raw[..end]).into_owned())
    }
}

/// Bytes of zero padding needed to round `len` up to a multiple of 8.
pub(crate) fn pad8(len: usize) -> usize {
    (8 - len % 8) % 8
}

pub(crate) fn put_zeros(out: &mut BytesMut, n: usize) {
    out.put_bytes(0, n);
}

/// Writes a fixed-size NUL-padded string, truncating to leave the terminating NUL.
pub(crate) fn put_fixed_str(out: &mut BytesMut, s: &str, n: usize) {
    let b = s.as_bytes();
    let len = b.len().min(n.saturating_sub(1));
    out.put_slice(&b[..len]);
    out.put_bytes(0, n - len);
}

/// Back-patches a big-endian u16 length at `at`, failing if it does not fit.
pub(crate) fn patch_len16(
    out: &mut BytesMut,
    at: usize,
    len: usize,
    what: &'static str,
) -> Result<(), Error> {
    let v = u16::try_from(len).map_err(|_| Error::TooLong {
        what,
        length: len,
        max: u16::MAX as usize,
    })?;
    out[at..at + 2].copy_from_slice(&v.to_be_bytes());
    Ok(())
}
