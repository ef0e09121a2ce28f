//! Human units used in the resources: durations (`1m`, `1h30m`, `5d`, via `humantime`) and byte
//! sizes written as Kubernetes quantities (`25Mi`, `10M`, `1048576`, `1.5Gi`, `1e6`).

use std::time::Duration;

/// Parses a human duration: `30s`, `1m`, `1h30m`, `1h 30m`, `5d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| format!("invalid duration {text:?}: {e}"))
}

/// Parses a byte size written as a Kubernetes quantity: a plain number (`1048576`), a binary
/// suffix (`Ki`, `Mi`, `Gi`, `Ti`, `Pi`, `Ei`), a decimal suffix (`k`, `M`, `G`, `T`, `P`, `E`) or
/// a decimal exponent (`1e6`). Fractions are allowed (`1.5Mi`) and round up to whole bytes, as
/// Kubernetes does.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let err = |why: &str| format!("invalid size {text:?}: {why}");
    let s = text.trim();
    let s = s.strip_prefix('+').unwrap_or(s);
    let number_len = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(number_len);
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(err("expected a number, e.g. 25Mi, 10M or 1048576"));
    }
    if frac_part.contains('.') {
        return Err(err("more than one decimal point"));
    }
    let digits = format!("{int_part}{frac_part}");
    let mantissa: u128 = digits.parse().map_err(|_| err("number too large"))?;
    let scale = pow(10, frac_part.len()).ok_or_else(|| err("too many decimals"))?;
    let multiplier = suffix_multiplier(suffix).ok_or_else(|| {
        err("unknown suffix; use Ki, Mi, Gi, Ti, Pi, Ei, k, M, G, T, P, E or an exponent (1e6)")
    })?;
    let bytes = mantissa
        .checked_mul(multiplier)
        .ok_or_else(|| err("too large"))?;
    let bytes = bytes.div_ceil(scale);
    u64::try_from(bytes).map_err(|_| err("too large"))
}

fn suffix_multiplier(suffix: &str) -> Option<u128> {
    let binary = |n: usize| pow(1024, n);
    let decimal = |n: usize| pow(1000, n);
    match suffix {
        "" => Some(1),
        "Ki" => binary(1),
        "Mi" => binary(2),
        "Gi" => binary(3),
        "Ti" => binary(4),
        "Pi" => binary(5),
        "Ei" => binary(6),
        "k" => decimal(1),
        "M" => decimal(2),
        "G" => decimal(3),
        "T" => decimal(4),
        "P" => decimal(5),
        "E" => decimal(6),
        exp => {
            let digits = exp.strip_prefix('e').or_else(|| exp.strip_prefix('E'))?;
            let digits = digits.strip_prefix('+').unwrap_or(digits);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            pow(10, digits.parse().ok()?)
        }
    }
}

fn pow(base: u128, exp: usize) -> Option<u128> {
    base.checked_pow(u32::try_from(exp).ok()?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        for (text, bytes) in [
            ("25Mi", 25 * 1024 * 1024),
            ("10M", 10_000_000),
            ("1048576", 1_048_576),
            ("1.5Mi", 1_572_864),
            ("1e6", 1_000_000),
            ("1E", 1_000_000_000_000_000_000),
            ("64k", 64_000),
            ("0.5", 1),
            (" 2Gi ", 2 * 1024 * 1024 * 1024),
        ] {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
        for bad in ["", "Mi", "25MB", "-1", "1.2.3", "20Ei", "1e", "100m"] {
            assert!(parse_size(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn durations() {
        let secs = |t: &str| parse_duration(t).map(|d| d.as_secs());
        assert_eq!(secs("1m"), Ok(60));
        assert_eq!(secs("1h30m"), Ok(5400));
        assert_eq!(secs("1h 30m"), Ok(5400));
        assert_eq!(secs("5d"), Ok(432_000));
        assert!(parse_duration("5 days later").is_err());
        assert!(parse_duration("").is_err());
    }
}
