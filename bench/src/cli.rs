//! Command-line parsing helpers: durations (`500ms`, `10s`, `2m`) and sizes (`1024`, `1KiB`, `1k`).

use std::time::Duration;

/// Parses `250us`, `500ms`, `10s`, `1.5s`, `2m`, `1h`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration: expected e.g. 500ms, 10s, 2m"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?}: use us, ms, s, m or h"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

/// Parses a byte size: `1024`, `1KiB`/`1k`, `1MiB`/`1m`.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: usize = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size: expected e.g. 1024, 1KiB, 1MiB"))?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1024,
        "m" | "mib" | "mb" => 1024 * 1024,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?}: use B, KiB or MiB"
            ));
        }
    };
    value
        .checked_mul(scale)
        .filter(|v| *v <= 64 * 1024 * 1024)
        .ok_or_else(|| format!("{text:?}: sizes above 64 MiB are not supported by the generator"))
}

/// Parses `NAME=URL` (a named chain for `overhead --compare`).
pub fn parse_named_url(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, url)) if !name.trim().is_empty() && url.contains("://") => {
            Ok((name.trim().to_owned(), url.trim().to_owned()))
        }
        _ => Err(format!(
            "{text:?}: expected NAME=URL, e.g. envoy=http://127.0.0.1:18083/api"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 days").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("1KiB"), Ok(1024));
        assert_eq!(parse_size("1k"), Ok(1024));
        assert_eq!(parse_size("2MiB"), Ok(2 * 1024 * 1024));
        assert!(parse_size("1GiB").is_err());
        assert!(parse_size("x").is_err());
    }

    #[test]
    fn named_urls() {
        assert_eq!(
            parse_named_url("envoy=http://127.0.0.1:1/x"),
            Ok(("envoy".to_owned(), "http://127.0.0.1:1/x".to_owned()))
        );
        for bad in [
            "http://127.0.0.1:1/",
            "=http://a/",
            "envoy=",
            "envoy=127.0.0.1:1",
        ] {
            assert!(parse_named_url(bad).is_err(), "{bad}");
        }
    }
}
