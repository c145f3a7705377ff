//! Kubernetes resource quantities (`100m`, `1.5Gi`, `2e3`, ...), parsed exactly (as nano-units
//! in an i128), shared by the scheduler, the controllers, the kubelet and the apiserver.

/// A quantity that could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QuantityError {
    #[error(
        "quantity {0:?}: expected a number with an optional suffix (m, k, Ki, M, Mi, G, Gi, ...)"
    )]
    Invalid(String),
}

/// Parses a quantity into nano-units (`1` → 1e9, `100m` → 1e8), exact for every suffix.
pub fn parse_nano(s: &str) -> Result<i128, QuantityError> {
    let bad = || QuantityError::Invalid(s.to_string());
    let s = s.trim();
    let (num, suffix) = split_number(s);
    if num.is_empty() {
        return Err(bad());
    }
    let (negative, digits) = match num.as_bytes()[0] {
        b'-' => (true, &num[1..]),
        b'+' => (false, &num[1..]),
        _ => (false, num),
    };
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(bad());
    }
    // value = mantissa * 10^(-frac_len) * multiplier, computed in nano units.
    let mut mantissa: i128 = 0;
    for c in int_part.bytes().chain(frac_part.bytes()) {
        if !c.is_ascii_digit() {
            return Err(bad());
        }
        mantissa = mantissa
            .checked_mul(10)
            .and_then(|m| m.checked_add(i128::from(c - b'0')))
            .ok_or_else(bad)?;
    }
    let frac_len = frac_part.len() as i32;
    let (binary, exp10): (i128, i32) = match suffix {
        "" => (1, 0),
        "n" => (1, -9),
        "u" => (1, -6),
        "m" => (1, -3),
        "k" => (1, 3),
        "M" => (1, 6),
        "G" => (1, 9),
        "T" => (1, 12),
        "P" => (1, 15),
        "E" => (1, 18),
        "Ki" => (1 << 10, 0),
        "Mi" => (1 << 20, 0),
        "Gi" => (1 << 30, 0),
        "Ti" => (1 << 40, 0),
        "Pi" => (1 << 50, 0),
        "Ei" => (1 << 60, 0),
        other => {
            let exp = other
                .strip_prefix('e')
                .or_else(|| other.strip_prefix('E'))
                .ok_or_else(bad)?;
            (1, exp.parse::<i32>().map_err(|_| bad())?)
        }
    };
    let scale = 9 + exp10 - frac_len;
    let mut v = mantissa.checked_mul(binary).ok_or_else(bad)?;
    if scale >= 0 {
        v = 10i128
            .checked_pow(scale as u32)
            .and_then(|p| v.checked_mul(p))
            .ok_or_else(bad)?;
    } else {
        // Round up, as upstream's Quantity does when it loses precision.
        let p = 10i128.checked_pow((-scale) as u32).ok_or_else(bad)?;
        v = (v + p - 1) / p;
    }
    Ok(if negative { -v } else { v })
}

fn split_number(s: &str) -> (&str, &str) {
    let end = s
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_digit() || *c == '.' || (*i == 0 && (*c == '-' || *c == '+'))))
        .map(|(i, _)| i)
        .unwrap_or(s.len());
    s.split_at(end)
}

/// Thousandths of a quantity (millicores of a cpu quantity), rounded up.
pub fn milli(s: &str) -> Result<i64, QuantityError> {
    Ok(clamp(ceil_div(parse_nano(s)?, 1_000_000)))
}

/// Whole units of a quantity (bytes for memory), rounded up.
pub fn units(s: &str) -> Result<i64, QuantityError> {
    Ok(clamp(ceil_div(parse_nano(s)?, 1_000_000_000)))
}

fn ceil_div(a: i128, b: i128) -> i128 {
    if a >= 0 {
        (a + b - 1) / b
    } else {
        a / b
    }
}

fn clamp(v: i128) -> i64 {
    v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}
