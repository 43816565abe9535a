//! Value parsers for command-line numbers: non-finite and out-of-range values are refused by clap
//! with a message naming the flag, before any work starts.

/// A finite number in `[0, 1]` (scores, IoU thresholds).
pub fn fraction(s: &str) -> Result<f32, String> {
    let v: f32 = s.trim().parse().map_err(|_| format!("`{s}` is not a number"))?;
    if !v.is_finite() || !(0.0..=1.0).contains(&v) {
        return Err(format!("`{s}` is out of range: expected a number from 0 to 1"));
    }
    Ok(v)
}

/// A finite probability in `[0, 1]`.
pub fn probability(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|_| format!("`{s}` is not a number"))?;
    if !v.is_finite() || !(0.0..=1.0).contains(&v) {
        return Err(format!("`{s}` is out of range: expected a number from 0 to 1"));
    }
    Ok(v)
}

/// Longest `--seconds` accepted (a day).
pub const MAX_SECONDS: f64 = 86_400.0;

/// A finite duration in seconds, more than 0 and at most [`MAX_SECONDS`].
pub fn seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !v.is_finite() || v <= 0.0 || v > MAX_SECONDS {
        return Err(format!("`{s}` is out of range: expected more than 0 and at most {MAX_SECONDS} seconds"));
    }
    Ok(v)
}

/// A whole number of at least 1.
pub fn count(s: &str) -> Result<usize, String> {
    let v: usize = s.trim().parse().map_err(|_| format!("`{s}` is not a whole number"))?;
    if v == 0 {
        return Err("must be at least 1".into());
    }
    Ok(v)
}

/// Cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_and_out_of_range_values_are_refused() {
        for bad in ["nan", "NaN", "inf", "-0.1", "1.5", "x"] {
            assert!(fraction(bad).is_err(), "{bad}");
        }
        assert_eq!(fraction("0.25"), Ok(0.25));
        for bad in ["nan", "inf", "0", "-1", "1e9"] {
            assert!(seconds(bad).is_err(), "{bad}");
        }
        assert_eq!(seconds("2.5"), Ok(2.5));
        assert!(count("0").is_err() && count("-3").is_err());
        assert_eq!(count("4"), Ok(4));
    }
}
