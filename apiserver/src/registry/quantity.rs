//! `resource.Quantity` parsing, enough to validate and compare quantities.

use serde_json::Value;

pub const QUANTITY_FORMAT_MSG: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

/// The value of a quantity (`500m`, `1Gi`, `1e3`, `2`), or `None` when it does not parse.
/// JSON numbers are accepted too, as the quantity decoder does.
pub fn parse(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => parse_str(s),
        _ => None,
    }
}

pub fn parse_str(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let digits = num.strip_prefix(['+', '-']).unwrap_or(num);
    if digits.is_empty()
        || digits.contains(['+', '-'])
        || digits.matches('.').count() > 1
        || digits == "."
    {
        return None;
    }
    let base: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp => {
            let e = exp.strip_prefix(['e', 'E'])?;
            let body = e.strip_prefix(['+', '-']).unwrap_or(e);
            if body.is_empty() || !body.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            10f64.powi(e.parse::<i32>().ok()?)
        }
    };
    Some(base * mult)
}

/// The quantity as the user wrote it, for messages.
pub fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_suffixes() {
        let cases = [
            ("1", Some(1.0)),
            ("500m", Some(0.5)),
            ("1Ki", Some(1024.0)),
            ("2Gi", Some(2.0 * 1024.0 * 1024.0 * 1024.0)),
            ("1e3", Some(1000.0)),
            ("1.5", Some(1.5)),
            ("-1", Some(-1.0)),
            ("1x", None),
            ("abc", None),
            ("", None),
            ("1..2", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_str(s), want, "{s}");
        }
    }
}
