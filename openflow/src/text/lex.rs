//! Splitting `ovs-ofctl` text into `key=value`, `key:value` and `key(value)` items, the way
//! `ofputil_parse_key_value()` in OVS lib/ofp-parse.c does, so that every line ovs-ofctl
//! accepts is cut at the same places here.

/// One item of a comma-separated list: `key`, `key=value`, `key:value` or `key(value)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Item<'a> {
    /// The text before the first `:`, `=`, `(`, comma or white space.
    pub key: &'a str,
    /// The value (empty when the item is a bare key).
    pub value: &'a str,
    /// The character that separated key and value (`=`, `:`, `(`), or `None` for a bare key.
    pub delim: Option<char>,
}

/// Iterator over the items of a list such as `table=0,ip,nw_src=10.0.0.1` or the inside of
/// `ct(commit,nat(src=1.2.3.4))`.
pub(crate) struct Items<'a> {
    rest: &'a str,
}

/// Returns an iterator over the items of `s`.
pub(crate) fn items(s: &str) -> Items<'_> {
    Items { rest: s }
}

fn is_sep(b: u8) -> bool {
    matches!(b, b',' | b' ' | b'\t' | b'\r' | b'\n')
}

/// Length of a value starting at `s` that ends at a byte for which `is_delim` holds (or
/// the end), skipping over balanced parentheses: `parse_value()` in lib/ofp-parse.c. All
/// delimiters are ASCII, so byte offsets are always char boundaries.
fn value_len(s: &[u8], is_delim: fn(u8) -> bool) -> usize {
    let mut n = 0;
    while n < s.len() && !is_delim(s[n]) {
        if s[n] == b'(' {
            let mut level = 0i32;
            loop {
                if n >= s.len() {
                    return n;
                }
                match s[n] {
                    b'(' => level += 1,
                    b')' => level -= 1,
                    _ => {}
                }
                n += 1;
                if level <= 0 {
                    break;
                }
            }
        } else {
            n += 1;
        }
    }
    n
}

fn is_close_paren(b: u8) -> bool {
    b == b')'
}

impl<'a> Iterator for Items<'a> {
    type Item = Item<'a>;

    fn next(&mut self) -> Option<Item<'a>> {
        let bytes = self.rest.as_bytes();
        let start = bytes.iter().position(|&b| !is_sep(b))?;
        let s = &self.rest[start..];
        let b = s.as_bytes();
        let key_len = b
            .iter()
            .position(|&c| matches!(c, b':' | b'=' | b'(') || is_sep(c))
            .unwrap_or(b.len());
        let key = &s[..key_len];
        let delim = b.get(key_len).map(|&c| c as char);
        let after_key = if key_len < b.len() {
            &s[key_len + 1..]
        } else {
            ""
        };
        let value_delims: fn(u8) -> bool = match delim {
            Some(':') | Some('=') => is_sep,
            Some('(') => is_close_paren,
            _ => {
                self.rest = after_key;
                return Some(Item {
                    key,
                    value: "",
                    delim: None,
                });
            }
        };
        let ab = after_key.as_bytes();
        let mut len = value_len(ab, value_delims);
        // `key(x)->y` (as in `load(...)`-style moves) keeps the `->y` in the value.
        if delim == Some('(') && ab[len..].starts_with(b")->") {
            len += value_len(&ab[len..], is_sep);
        }
        let value = &after_key[..len];
        // Skip the delimiter that ended the value (always one ASCII byte).
        self.rest = if len < ab.len() {
            &after_key[len + 1..]
        } else {
            ""
        };
        Some(Item { key, value, delim })
    }
}

/// Splits a flow line at its `actions=` keyword, as `ofp_extract_actions()` does: the
/// first occurrence of `action` ends the match part, and the text after the next `=` is
/// the action list. Returns `(match part, Some(actions))`, or `(line, None)` without one.
pub(crate) fn split_actions(line: &str) -> (&str, Option<&str>) {
    match line.find("action") {
        Some(pos) => {
            let head = &line[..pos];
            let tail = &line[pos..];
            match tail.find('=') {
                Some(eq) => (head, Some(&tail[eq + 1..])),
                None => (head, None),
            }
        }
        None => (line, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(s: &str) -> Vec<(String, String, Option<char>)> {
        items(s)
            .map(|i| (i.key.to_owned(), i.value.to_owned(), i.delim))
            .collect()
    }

    #[test]
    fn splits_like_ovs() {
        assert_eq!(
            collect("table=0, ip,nw_src=10.0.0.1/24"),
            vec![
                ("table".into(), "0".into(), Some('=')),
                ("ip".into(), "".into(), None),
                ("nw_src".into(), "10.0.0.1/24".into(), Some('=')),
            ]
        );
        assert_eq!(
            collect("ct(commit,nat(src=1.2.3.4)),output:1,resubmit(,3)"),
            vec![
                ("ct".into(), "commit,nat(src=1.2.3.4)".into(), Some('(')),
                ("output".into(), "1".into(), Some(':')),
                ("resubmit".into(), ",3".into(), Some('(')),
            ]
        );
        assert_eq!(
            collect("load:0x1->NXM_NX_REG0[0..15],move:A[]->B[]"),
            vec![
                ("load".into(), "0x1->NXM_NX_REG0[0..15]".into(), Some(':')),
                ("move".into(), "A[]->B[]".into(), Some(':')),
            ]
        );
    }

    #[test]
    fn unbalanced_parenthesis_takes_the_rest() {
        assert_eq!(
            collect("ct(commit"),
            vec![("ct".into(), "commit".into(), Some('('))]
        );
    }

    #[test]
    fn actions_split_at_first_action_keyword() {
        assert_eq!(
            split_actions("table=1,ip actions=drop"),
            ("table=1,ip ", Some("drop"))
        );
        assert_eq!(split_actions("table=1"), ("table=1", None));
    }
}
