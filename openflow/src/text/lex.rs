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

fn is_sep(c: char) -> bool {
    matches!(c, ',' | ' ' | '\t' | '\r' | '\n')
}

/// Length of a value starting at `s` that ends at one of `delims` (or the end), skipping
/// over balanced parentheses — `parse_value()` in lib/ofp-parse.c.
fn value_len(s: &str, delims: &[char]) -> usize {
    let bytes = s.as_bytes();
    let mut n = 0;
    while n < bytes.len() && !delims.contains(&(bytes[n] as char)) {
        if bytes[n] == b'(' {
            let mut level = 0i32;
            loop {
                if n >= bytes.len() {
                    return n;
                }
                match bytes[n] {
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

impl<'a> Iterator for Items<'a> {
    type Item = Item<'a>;

    fn next(&mut self) -> Option<Item<'a>> {
        let s = self.rest.trim_start_matches(is_sep);
        if s.is_empty() {
            self.rest = s;
            return None;
        }
        let key_len = s
            .find(|c: char| matches!(c, ':' | '=' | '(') || is_sep(c))
            .unwrap_or(s.len());
        let key = &s[..key_len];
        let delim = s[key_len..].chars().next();
        let after_key = match delim {
            Some(c) => &s[key_len + c.len_utf8()..],
            None => "",
        };
        let value_delims: &[char] = match delim {
            Some(':') | Some('=') => &[',', ' ', '\t', '\r', '\n'],
            Some('(') => &[')'],
            _ => {
                self.rest = after_key;
                return Some(Item {
                    key,
                    value: "",
                    delim: None,
                });
            }
        };
        let mut len = value_len(after_key, value_delims);
        // `key(x)->y` (as in `load(...)`-style moves) keeps the `->y` in the value.
        if delim == Some('(') && after_key[len..].starts_with(")->") {
            len += value_len(&after_key[len..], &[',', ' ', '\t', '\r', '\n']);
        }
        let value = &after_key[..len];
        let rest = &after_key[len..];
        self.rest = match rest.chars().next() {
            Some(c) => &rest[c.len_utf8()..],
            None => rest,
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
