//! Go `time.Duration` syntax (`1h`, `90m`, `2160h0m0s`), which cert-manager and Istio put in the
//! `experimental.cert-manager.io/request-duration` annotation.
//!
//! Only parsing: whether the duration is acceptable is `decide`'s job. Configuration files use
//! humantime syntax instead (`30d`), parsed in `settings`.

use std::time::Duration;

/// Parses a sequence of decimal numbers each followed by a unit (`ns`, `us`/`µs`, `ms`, `s`, `m`,
/// `h`). `None` for anything else (a sign, a bare number, `d`), and for absurdly large values, so
/// that the caller's time arithmetic cannot overflow.
pub(super) fn parse_go_duration(s: &str) -> Option<Duration> {
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += value * scale;
    }
    (total.is_finite() && total < 1e12).then(|| Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(
            parse_go_duration("2160h0m0s"),
            Some(Duration::from_secs(2160 * 3600))
        );
        assert_eq!(parse_go_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("10"), None);
        assert_eq!(parse_go_duration("1d"), None);
        assert_eq!(parse_go_duration(""), None);
    }
}
