//! Human durations in configuration values: `"90s"`, `"5m"`, `"2h"`, `"14d"`, `"1h30m"`,
//! `"500ms"`, `"2w"`.

use std::time::Duration;

/// Parses a duration like `"1h30m"`. A bare number is refused: a unit must be given.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("{text:?} has no unit (use s, m, h, d or w, e.g. \"5m\")"))?;
        if digits == 0 {
            return Err(format!(
                "{text:?} is not a duration (e.g. \"90s\", \"5m\", \"14d\")"
            ));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{text:?}: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = rest[..unit_len].trim();
        rest = &rest[unit_len..];
        let secs = |mult: u64| n.checked_mul(mult).map(Duration::from_secs);
        let part = match unit {
            "ms" => Some(Duration::from_millis(n)),
            "s" | "sec" | "secs" => secs(1),
            "m" | "min" | "mins" => secs(60),
            "h" | "hour" | "hours" => secs(3600),
            "d" | "day" | "days" => secs(86_400),
            "w" | "week" | "weeks" => secs(7 * 86_400),
            _ => {
                return Err(format!(
                    "{text:?}: unknown unit {unit:?} (use ms, s, m, h, d or w)"
                ));
            }
        }
        .ok_or_else(|| format!("{text:?}: duration too large"))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| format!("{text:?}: duration too large"))?;
    }
    Ok(total)
}

/// Formats a duration the way [`parse_duration`] reads it (largest units first).
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_with_units() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("14d"), Ok(Duration::from_secs(14 * 86_400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2w"), Ok(Duration::from_secs(14 * 86_400)));
    }

    #[test]
    fn bad_durations_say_why() {
        assert!(parse_duration("90").unwrap_err().contains("no unit"));
        assert!(parse_duration("5x").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("m5").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    #[test]
    fn format_round_trips() {
        for s in ["90s", "5m", "14d", "1h30m", "500ms"] {
            let d = parse_duration(s).unwrap();
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
    }
}
