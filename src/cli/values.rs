//! Value parsers for command-line numbers: non-finite and out-of-range values are refused by clap
//! with a message naming the flag, before any work starts.

/// A finite number in `[0, 1]` (scores, IoU thresholds).
#[cfg_attr(not(feature = "infer"), allow(dead_code))] // `detect --conf`
pub fn fraction(s: &str) -> Result<f32, String> {
    probability(s).map(|v| v as f32)
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
#[cfg_attr(not(feature = "infer"), allow(dead_code))] // `bench --seconds`
pub const MAX_SECONDS: f64 = 86_400.0;

/// A finite duration in seconds, more than 0 and at most [`MAX_SECONDS`].
#[cfg_attr(not(feature = "infer"), allow(dead_code))]
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

/// Parses a latency: `20ms`, `0.02s` or `20` (milliseconds); finite and positive.
#[cfg_attr(not(feature = "train"), allow(dead_code))] // `detnas search --latency-max`
pub fn milliseconds(s: &str) -> Result<f64, String> {
    let t = s.trim().to_ascii_lowercase();
    let (number, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1e3)
    } else {
        (t.as_str(), 1.0)
    };
    let v: f64 = number.trim().parse().map_err(|_| format!("`{s}` is not a latency such as 20ms or 0.02s"))?;
    let ms = v * scale;
    if !ms.is_finite() || ms <= 0.0 {
        return Err(format!("`{s}` is out of range: expected a positive latency"));
    }
    Ok(ms)
}

/// Cores this process may use.
#[cfg_attr(not(feature = "infer"), allow(dead_code))] // `detect --workers`
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
        assert_eq!(milliseconds("20ms"), Ok(20.0));
        assert_eq!(milliseconds("0.02s"), Ok(20.0));
        assert_eq!(milliseconds(" 15 "), Ok(15.0));
        for bad in ["nan", "-1ms", "0", "fast", "infs"] {
            assert!(milliseconds(bad).is_err(), "{bad}");
        }
    }
}
