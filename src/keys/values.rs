//! Values in the configuration that are more than strings: sizes, daily spans of hours and
//! paths (durations are in `duration`).

use std::path::{Path, PathBuf};

/// Parses a size: `"20MB"` (decimal units, as mail clients show sizes), `"5MiB"`, `"512KB"`,
/// or a number of bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = (&t[..split], t[split..].trim());
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. \"20MB\", \"512KB\")"))?;
    let mult: f64 = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1.0,
        "KB" | "K" => 1e3,
        "MB" | "M" => 1e6,
        "GB" | "G" => 1e9,
        "KIB" => 1024.0,
        "MIB" => 1024.0 * 1024.0,
        "GIB" => 1024.0 * 1024.0 * 1024.0,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use B, KB, MB, GB, KiB, MiB or GiB)"
            ));
        }
    };
    let bytes = value * mult;
    if !(1.0..1e15).contains(&bytes) {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(bytes as u64)
}

/// A daily span of local time, `"22:00-07:00"` (it may run past midnight).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    /// Minutes after midnight.
    pub start: u16,
    pub end: u16,
}

impl QuietHours {
    /// Parses `"HH:MM-HH:MM"`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a span of hours like \"22:00-07:00\"");
        let (a, b) = text.split_once('-').ok_or_else(bad)?;
        let minutes = |t: &str| -> Option<u16> {
            let (h, m) = t.trim().split_once(':')?;
            let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
            (h < 24 && m < 60 && t.trim().len() == 5).then_some(h * 60 + m)
        };
        let (start, end) = (minutes(a).ok_or_else(bad)?, minutes(b).ok_or_else(bad)?);
        if start == end {
            return Err(format!("{text:?} starts and ends at the same time"));
        }
        Ok(Self { start, end })
    }

    /// Whether `minute` (after midnight) falls inside.
    pub fn contains(&self, minute: u16) -> bool {
        if self.start < self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }
}

/// Expands a leading `~` and makes a relative path relative to `base` (the directory of
/// the config file), so the meaning of a path does not depend on where popsync was started.
pub fn expand_path(raw: &str, base: &Path) -> Result<PathBuf, String> {
    let path = if raw == "~" || raw.starts_with("~/") || raw.starts_with("~\\") {
        let home = directories::BaseDirs::new()
            .map(|b| b.home_dir().to_owned())
            .ok_or("cannot expand ~: no home directory")?;
        if raw.len() > 2 {
            home.join(&raw[2..])
        } else {
            home
        }
    } else if raw.starts_with('~') {
        return Err(format!("{raw:?}: only ~ and ~/ are expanded (not ~user)"));
    } else {
        PathBuf::from(raw)
    };
    Ok(if path.is_absolute() {
        path
    } else {
        base.join(path)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("20MB"), Ok(20_000_000));
        assert_eq!(parse_size("5MiB"), Ok(5 << 20));
        assert_eq!(parse_size("1.5 GB"), Ok(1_500_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("0").is_err());
    }

    #[test]
    fn quiet_hours_across_midnight_and_within_a_day() {
        let night = QuietHours::parse("22:00-07:00").unwrap();
        assert!(night.contains(22 * 60) && night.contains(3 * 60) && !night.contains(7 * 60));
        assert!(!night.contains(12 * 60));
        let lunch = QuietHours::parse("12:00-13:30").unwrap();
        assert!(lunch.contains(12 * 60 + 59) && !lunch.contains(13 * 60 + 30));
        for bad in ["22-07", "25:00-01:00", "10:00-10:00", "1:00-2:00", "nope"] {
            assert!(QuietHours::parse(bad).is_err(), "{bad}");
        }
    }
}
