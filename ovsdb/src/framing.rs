//! JSON-RPC stream framing (RFC 7047 §4): the stream is a sequence of JSON values with no
//! delimiter, split by the transport at any byte.
//!
//! Owns: splitting bytes into complete messages with one pass over each byte (a scanner
//! that keeps its string/escape/depth state between reads), and bounding the buffer.
//! Does not own: JSON parsing of a complete message (serde_json does that once, on the
//! complete slice) or the meaning of messages.

use crate::error::{Error, excerpt};

/// The default bound on one message: generous for a full `Open_vSwitch` dump of
/// thousands of ports, small enough that a garbage stream cannot exhaust memory.
pub const DEFAULT_MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// Incremental splitter of a byte stream into JSON messages.
///
/// Feed bytes with [`push`](Framer::push), take messages with
/// [`next_message`](Framer::next_message) until it returns `Ok(None)`. After an error the
/// stream is unusable (its position is lost) and every later call returns an error.
#[derive(Debug)]
pub struct Framer {
    buf: Vec<u8>,
    /// Start of the message being scanned (or of unscanned input between messages).
    start: usize,
    /// Next byte to scan.
    pos: usize,
    /// Nesting depth inside the current message; 0 between messages.
    depth: u32,
    in_string: bool,
    escape: bool,
    /// Stream offset of `buf[0]`, for error messages.
    consumed: u64,
    max: usize,
    failed: Option<(&'static str, u8, u64)>,
}

impl Framer {
    /// A framer refusing messages longer than `max_message` bytes.
    pub fn new(max_message: usize) -> Framer {
        Framer {
            buf: Vec::new(),
            start: 0,
            pos: 0,
            depth: 0,
            in_string: false,
            escape: false,
            consumed: 0,
            max: max_message,
            failed: None,
        }
    }

    /// Appends bytes read from the transport (dropped once the stream has failed: its
    /// position is lost, and keeping them would grow without bound).
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        if self.start > 0 && self.start == self.buf.len() {
            self.consumed += self.start as u64;
            self.buf.clear();
            self.pos = 0;
            self.start = 0;
        } else if self.start > 0 && self.start >= self.buf.len() / 2 {
            // Compact only when the dead prefix dominates, so each byte is moved O(1) times.
            self.consumed += self.start as u64;
            self.buf.drain(..self.start);
            self.pos -= self.start;
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet returned as a message.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete message as raw bytes, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, Error> {
        if let Some((reason, byte, offset)) = self.failed {
            return Err(Error::Framing {
                reason,
                byte,
                offset,
            });
        }
        while self.pos < self.buf.len() {
            let b = self.buf[self.pos];
            if self.depth == 0 {
                match b {
                    b' ' | b'\t' | b'\r' | b'\n' => {
                        self.pos += 1;
                        self.start = self.pos;
                        continue;
                    }
                    b'{' | b'[' => {
                        self.start = self.pos;
                        self.depth = 1;
                    }
                    _ => {
                        let offset = self.consumed + self.pos as u64;
                        let reason = "a JSON-RPC message must start with '{' or '['";
                        self.failed = Some((reason, b, offset));
                        return Err(Error::Framing {
                            reason,
                            byte: b,
                            offset,
                        });
                    }
                }
            } else if self.in_string {
                if self.escape {
                    self.escape = false;
                } else if b == b'\\' {
                    self.escape = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
            } else {
                match b {
                    b'"' => self.in_string = true,
                    b'{' | b'[' => self.depth += 1,
                    b'}' | b']' => {
                        self.depth -= 1;
                        if self.depth == 0 {
                            let frame = self.start..self.pos + 1;
                            self.pos += 1;
                            self.start = self.pos;
                            return Ok(Some(&self.buf[frame]));
                        }
                    }
                    _ => {}
                }
            }
            self.pos += 1;
            if self.pos - self.start > self.max {
                let seen = self.pos - self.start;
                self.failed = Some((
                    "message exceeds the size limit",
                    b,
                    self.consumed + self.pos as u64,
                ));
                return Err(Error::MessageTooLarge {
                    limit: self.max,
                    seen,
                });
            }
        }
        Ok(None)
    }

    /// The next complete message, parsed.
    pub fn next_message(&mut self) -> Result<Option<serde_json::Value>, Error> {
        match self.next_frame()? {
            None => Ok(None),
            Some(frame) => serde_json::from_slice(frame).map(Some).map_err(|source| {
                let start = excerpt(&String::from_utf8_lossy(frame));
                Error::Json { source, start }
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(framer: &mut Framer) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        while let Some(v) = framer.next_message().expect("valid stream") {
            out.push(v);
        }
        out
    }

    #[test]
    fn splits_concatenated_values_with_tricky_strings() {
        let text = br#"{"a":"}{\"\\"} [1,[2]]{"b":"\\"}"#;
        for split in 0..=text.len() {
            let mut f = Framer::new(1024);
            f.push(&text[..split]);
            let mut got = all(&mut f);
            f.push(&text[split..]);
            got.extend(all(&mut f));
            assert_eq!(got.len(), 3, "split at {split}");
            assert_eq!(got[0]["a"], "}{\"\\");
            assert_eq!(got[2]["b"], "\\");
        }
    }

    #[test]
    fn garbage_between_messages_is_an_error_and_stays_one() {
        let mut f = Framer::new(1024);
        f.push(b"{} x{}");
        assert!(f.next_message().expect("first").is_some());
        let err = f.next_message().expect_err("garbage");
        assert!(err.to_string().contains("0x78"), "{err}");
        assert!(f.next_message().is_err());
    }

    #[test]
    fn oversized_message_is_refused() {
        let mut f = Framer::new(16);
        f.push(br#"{"a":"0123456789abcdef"}"#);
        assert!(matches!(
            f.next_message(),
            Err(Error::MessageTooLarge { limit: 16, .. })
        ));
    }

    #[test]
    fn balanced_but_invalid_json_is_a_json_error() {
        let mut f = Framer::new(64);
        f.push(b"{1:2}");
        assert!(matches!(f.next_message(), Err(Error::Json { .. })));
    }
}
