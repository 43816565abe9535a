//! Human sizes for FLOPs budgets: `300M`, `1.3G`, `2.5e8`, `300000000`.

use crate::error::{CoreError, Result};

/// Parses a count with an optional `K`/`M`/`G`/`T` suffix (powers of 1000, case-insensitive).
/// The result must be a non-negative integer after scaling (`1.3G` = 1 300 000 000).
pub fn parse_count(input: &str) -> Result<u64> {
    let bad = |reason: &str| CoreError::BadSize { input: input.to_string(), reason: reason.into() };
    let s = input.trim();
    if s.is_empty() {
        return Err(bad("empty"));
    }
    let (number, scale) = match s.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&s[..s.len() - 1], 1e3),
        Some('M') => (&s[..s.len() - 1], 1e6),
        Some('G') => (&s[..s.len() - 1], 1e9),
        Some('T') => (&s[..s.len() - 1], 1e12),
        _ => (s, 1.0),
    };
    if let Ok(v) = number.parse::<u64>() {
        return v.checked_mul(scale as u64).ok_or_else(|| bad("too large"));
    }
    let v: f64 = number.trim().parse().map_err(|_| bad("expected a number like 300M, 1.3G or 300000000"))?;
    let scaled = v * scale;
    if !scaled.is_finite() || scaled < 0.0 {
        return Err(bad("must be a non-negative finite number"));
    }
    // `u64::MAX as f64` is 2^64, one more than the largest count.
    if scaled >= u64::MAX as f64 {
        return Err(bad("too large"));
    }
    Ok(scaled.round() as u64)
}

/// Formats a count with three significant digits and an SI suffix (`299.5M`, `1.32G`).
pub fn format_count(v: u64) -> String {
    let v = v as f64;
    let (x, suffix) = if v >= 1e12 {
        (v / 1e12, "T")
    } else if v >= 1e9 {
        (v / 1e9, "G")
    } else if v >= 1e6 {
        (v / 1e6, "M")
    } else if v >= 1e3 {
        (v / 1e3, "K")
    } else {
        return format!("{v}");
    };
    if x >= 100.0 { format!("{x:.1}{suffix}") } else { format!("{x:.2}{suffix}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_suffixes_and_plain_numbers() {
        assert_eq!(parse_count("300M").unwrap(), 300_000_000);
        assert_eq!(parse_count("1.3G").unwrap(), 1_300_000_000);
        assert_eq!(parse_count("3.8g").unwrap(), 3_800_000_000);
        assert_eq!(parse_count("250k").unwrap(), 250_000);
        assert_eq!(parse_count("123456789").unwrap(), 123_456_789);
        assert_eq!(parse_count("2.5e8").unwrap(), 250_000_000);
    }

    #[test]
    fn counts_over_u64_are_too_large_never_wrapped() {
        assert_eq!(parse_count("18446744073709551615").unwrap(), u64::MAX);
        assert_eq!(parse_count("18446744073709551K").unwrap(), 18_446_744_073_709_551_000);
        for big in ["18446744073709552K", "18446744073709551616", "18446744073709551615T"] {
            assert!(parse_count(big).unwrap_err().to_string().contains("too large"), "{big}");
        }
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "M", "abc", "-3M", "1.2.3G", "nanM"] {
            assert!(parse_count(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn formats_with_suffix() {
        assert_eq!(format_count(299_500_000), "299.5M");
        assert_eq!(format_count(1_320_000_000), "1.32G");
        assert_eq!(format_count(999), "999");
    }
}
