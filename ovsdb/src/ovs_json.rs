//! JSON text exactly as OVS's own tools print it (lib/json.c): compact, object members
//! sorted by name (`JSSF_SORT`), reals as `%.17g`, strings escaped like serde_json does
//! (`\"`, `\\`, `\b\f\n\r\t`, other control bytes as `\u00xx`, everything else raw).
//!
//! Owns: that formatting, so `yardctl ovsdb` output compares byte-for-byte with
//! `ovsdb-client`. Independent of whether serde_json preserves insertion order.

use serde_json::Value as Json;

/// Serializes `value` the way `ovsdb-client` prints it.
pub fn to_string(value: &Json) -> String {
    let mut out = String::new();
    write(value, &mut out);
    out
}

fn write(value: &Json, out: &mut String) {
    match value {
        Json::Null => out.push_str("null"),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push_str(&i.to_string());
            } else if let Some(u) = n.as_u64() {
                out.push_str(&u.to_string());
            } else {
                out.push_str(&format_g17(n.as_f64().unwrap_or(0.0)));
            }
        }
        Json::String(s) => out.push_str(&Json::String(s.clone()).to_string()),
        Json::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(item, out);
            }
            out.push(']');
        }
        Json::Object(members) => {
            let mut sorted: Vec<_> = members.iter().collect();
            sorted.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Json::String(k.clone()).to_string());
                out.push(':');
                write(v, out);
            }
            out.push('}');
        }
    }
}

/// C's `printf("%.17g", x)`.
fn format_g17(x: f64) -> String {
    if x == 0.0 {
        return if x.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    let sci = format!("{x:.16e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..17).contains(&exp) {
        let decimals = (16 - exp).max(0) as usize;
        trim_fraction(format!("{x:.decimals$}"))
    } else {
        let mantissa = trim_fraction(mantissa.to_owned());
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}

fn trim_fraction(mut s: String) -> String {
    if s.contains('.') {
        while s.ends_with('0') {
            s.pop();
        }
        if s.ends_with('.') {
            s.pop();
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_members_and_formats_like_ovs() {
        let v: Json =
            serde_json::from_str(r#"{"z":1,"a":[true,null,"x\u0001\"é"],"m":{"b":2,"a":1}}"#)
                .expect("json");
        assert_eq!(
            to_string(&v),
            r#"{"a":[true,null,"x\u0001\"é"],"m":{"a":1,"b":2},"z":1}"#
        );
    }

    #[test]
    fn reals_as_percent_17g() {
        assert_eq!(format_g17(1.5), "1.5");
        assert_eq!(format_g17(0.1), "0.10000000000000001");
        assert_eq!(format_g17(1e20), "1e+20");
        assert_eq!(format_g17(-2.5e-7), "-2.4999999999999999e-07");
        assert_eq!(format_g17(100.0), "100");
    }
}
