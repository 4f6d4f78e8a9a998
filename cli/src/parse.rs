//! The values people type on the command line: durations (`30s`, `500ms`,
//! `2h`), sizes (`256M`, `1GiB`) and `KEY=VALUE` pairs. Each parser names
//! what was wrong and never panics, whatever it is given (property tests
//! below); the library validates the ranges it accepts.

use std::time::Duration;

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    let too_long = || format!("{text:?} is too long a duration");
    // Whole numbers exactly; fractions through f64, to the nanosecond.
    if let Ok(whole) = number.parse::<u64>() {
        let millis = whole.checked_mul(millis_per_unit).ok_or_else(too_long)?;
        return Ok(Duration::from_millis(millis));
    }
    let value: f64 = number
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && number.contains('.'))
        .ok_or_else(|| format!("{text:?} is not a duration like 30s"))?;
    Duration::try_from_secs_f64(value * millis_per_unit as f64 / 1000.0).map_err(|_| too_long())
}

/// `512`, `64K`, `256M`, `1G`, `2T`, with an optional `i`/`iB`/`B`
/// (units are binary either way).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 256M"))?;
    let shift = match unit.trim_end_matches(['B', 'b']).trim_end_matches('i') {
        "" => 0,
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        "T" | "t" => 40,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (K, M, G, T)")),
    };
    value
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

pub fn parse_env(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))?;
    Ok((key.to_string(), value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("1gb"), Ok(1 << 30));
        for bad in ["", "M", "1.5G", "12X", "-1", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        for bad in ["", "s", "-1s", "1.2.3s", "1e9s", "99999999999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("10x").is_err());
    }

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn no_input_panics(text in "\\PC{0,24}") {
            let _ = parse_duration(&text);
            let _ = parse_size(&text);
            let _ = parse_env(&text);
        }

        #[test]
        fn sizes_round_trip(value in 0u64..(1 << 24), unit in 0usize..5) {
            let (suffix, shift) = [("", 0), ("K", 10), ("M", 20), ("G", 30), ("T", 40)][unit];
            prop_assert_eq!(parse_size(&format!("{value}{suffix}")), Ok(value << shift));
        }

        #[test]
        fn oversized_sizes_are_errors(value in (1u64 << 25)..u64::MAX) {
            let text = format!("{}T", value);
            prop_assert!(parse_size(&text).is_err());
        }

        #[test]
        fn milliseconds_round_trip(ms in 0u64..(1 << 40)) {
            prop_assert_eq!(parse_duration(&format!("{ms}ms")), Ok(Duration::from_millis(ms)));
        }
    }
}
