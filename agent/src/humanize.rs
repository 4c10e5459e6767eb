//! Durations written the way a person reads them: `250ms`, `10s`, `1.5s`, `2m`, `1h5m`.

use std::time::Duration;

/// Formats a duration for messages: milliseconds below a second, one decimal below a minute,
/// then whole hours, minutes and seconds with zero parts left out.
pub(crate) fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs();
    if secs < 60 {
        if ms.is_multiple_of(1000) {
            return format!("{secs}s");
        }
        let text = format!("{:.1}", d.as_secs_f64());
        return format!("{}s", text.trim_end_matches(".0"));
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    for (value, unit) in [(h, "h"), (m, "m"), (s, "s")] {
        if value > 0 {
            out.push_str(&format!("{value}{unit}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_a_person_writes() {
        let cases = [
            (0, "0ms"),
            (250, "250ms"),
            (1_000, "1s"),
            (1_500, "1.5s"),
            (10_000, "10s"),
            (59_999, "60s"),
            (60_000, "1m"),
            (90_000, "1m30s"),
            (120_000, "2m"),
            (3_600_000, "1h"),
            (3_900_000, "1h5m"),
            (3_605_000, "1h5s"),
        ];
        for (ms, want) in cases {
            assert_eq!(human_duration(Duration::from_millis(ms)), want, "{ms}ms");
        }
    }
}
