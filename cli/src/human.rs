//! Flag values a person writes: durations (`30s`, `5m`, `7d`; a bare number is milliseconds)
//! and byte sizes (`2GiB`, `500MiB`). Defaults are shown the same way, taken from the
//! libraries' own defaults, so a default lives in one place.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A duration flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Human(pub Duration);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl FromStr for Human {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        drover_scheduler::duration::parse_duration(s).map(Human)
    }
}

/// A duration flag that must be longer than zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Positive(pub Duration);

impl fmt::Display for Positive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Human(self.0).fmt(f)
    }
}

impl FromStr for Positive {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.parse::<Human>()?.0 {
            Duration::ZERO => Err(format!("`{s}` must be longer than zero")),
            d => Ok(Positive(d)),
        }
    }
}

/// A byte-size flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size(pub u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", bytesize::ByteSize::b(self.0))
    }
}

impl FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        drover_coordinator::cache::parse_size(s).map(Size)
    }
}

/// Bytes for people: `512 B`, `1.5 KiB`, `10.0 MiB`.
pub fn bytes(n: u64) -> String {
    bytesize::ByteSize::b(n).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_print_as_they_parse() {
        for d in [
            Duration::from_secs(1),
            Duration::from_secs(600),
            Duration::from_secs(7 * 86_400),
        ] {
            assert_eq!(Human(d).to_string().parse::<Human>(), Ok(Human(d)));
        }
        let two_gib = Size(2 << 30);
        assert_eq!(two_gib.to_string().parse::<Size>(), Ok(two_gib));
        assert!("0".parse::<Positive>().is_err());
        assert_eq!(
            "1500".parse::<Human>(),
            Ok(Human(Duration::from_millis(1500)))
        );
    }
}
