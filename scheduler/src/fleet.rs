//! The agent SPEC several commands take: `"COUNT TEMPLATE:SLOTS, COUNT TEMPLATE:SLOTS"`, e.g.
//! `"3 linux-medium:2, 1 linux-large:4"` is three `linux-medium` agents with two slots each and
//! one `linux-large` agent with four.
//!
//! `COUNT` may be left out (one agent) and so may `:SLOTS` (one slot), which makes Nx's
//! `distribute-on` form, `"5 linux-medium-js, 5 linux-large-js"`, a valid SPEC too.

use std::fmt;

/// A whole fleet: groups of identical agents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetSpec {
    pub groups: Vec<AgentGroup>,
}

/// `count` agents of launch template `template`, each running up to `slots` tasks at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentGroup {
    pub count: u32,
    pub template: String,
    pub slots: u32,
}

/// Why a SPEC could not be read; each message quotes the bad part.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FleetSpecError {
    #[error("the agent spec is empty; expected `COUNT TEMPLATE:SLOTS, ...`, e.g. `{EXAMPLE}`")]
    Empty,
    #[error(
        "`{spec}` has an empty group (two commas in a row, or one at an end); expected `COUNT TEMPLATE:SLOTS` between commas"
    )]
    EmptyGroup { spec: String },
    #[error(
        "`{group}` has too many words; expected `COUNT TEMPLATE:SLOTS`, e.g. `3 linux-medium:2`"
    )]
    TooManyWords { group: String },
    #[error("`{group}`: COUNT `{count}` is not a whole number from 1 to {MAX_AGENTS}")]
    BadCount { group: String, count: String },
    #[error("`{group}`: SLOTS `{slots}` is not a whole number from 1 to {MAX_SLOTS}")]
    BadSlots { group: String, slots: String },
    #[error("`{group}` has no TEMPLATE; expected `COUNT TEMPLATE:SLOTS`, e.g. `3 linux-medium:2`")]
    MissingTemplate { group: String },
}

const EXAMPLE: &str = "3 linux-medium:2, 1 linux-large:4";

/// The most slots one agent may have (its Hello is refused above this).
pub const MAX_SLOTS: u32 = 1024;
/// The most agents one group of a SPEC may have.
pub const MAX_AGENTS: u32 = 100_000;

impl FleetSpec {
    pub fn parse(spec: &str) -> Result<FleetSpec, FleetSpecError> {
        if spec.trim().is_empty() {
            return Err(FleetSpecError::Empty);
        }
        let groups = spec
            .split(',')
            .map(|group| {
                if group.trim().is_empty() {
                    return Err(FleetSpecError::EmptyGroup {
                        spec: spec.trim().to_string(),
                    });
                }
                AgentGroup::parse(group.trim())
            })
            .collect::<Result<_, _>>()?;
        Ok(FleetSpec { groups })
    }

    /// Every template, in SPEC order, each once.
    pub fn templates(&self) -> Vec<&str> {
        let mut seen: Vec<&str> = Vec::new();
        for group in &self.groups {
            if !seen.contains(&group.template.as_str()) {
                seen.push(&group.template);
            }
        }
        seen
    }

    /// How many agents the SPEC describes.
    pub fn agents(&self) -> u64 {
        self.groups.iter().map(|g| u64::from(g.count)).sum()
    }
}

impl AgentGroup {
    /// One `COUNT TEMPLATE:SLOTS` group, already trimmed and not empty.
    fn parse(group: &str) -> Result<AgentGroup, FleetSpecError> {
        let words: Vec<&str> = group.split_whitespace().collect();
        let (count, template) = match words[..] {
            [template] => (None, template),
            [count, template] => (Some(count), template),
            _ => {
                return Err(FleetSpecError::TooManyWords {
                    group: group.to_string(),
                });
            }
        };
        let count = match count {
            None => 1,
            Some(count) => positive(count)
                .filter(|&n| n <= MAX_AGENTS)
                .ok_or_else(|| FleetSpecError::BadCount {
                    group: group.to_string(),
                    count: count.to_string(),
                })?,
        };
        let (template, slots) = match template.split_once(':') {
            None => (template, 1),
            Some((template, slots)) => {
                let slots = positive(slots).filter(|&n| n <= MAX_SLOTS).ok_or_else(|| {
                    FleetSpecError::BadSlots {
                        group: group.to_string(),
                        slots: slots.to_string(),
                    }
                })?;
                (template, slots)
            }
        };
        if template.is_empty() {
            return Err(FleetSpecError::MissingTemplate {
                group: group.to_string(),
            });
        }
        Ok(AgentGroup {
            count,
            template: template.to_string(),
            slots,
        })
    }
}

/// A whole number from 1 up, digits only (no sign).
fn positive(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|&n| n > 0)
}

/// Always the full form, `3 linux-medium:2, 1 linux-large:1`, which parses back to the same.
impl fmt::Display for FleetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, group) in self.groups.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{group}")?;
        }
        Ok(())
    }
}

impl fmt::Display for AgentGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}:{}", self.count, self.template, self.slots)
    }
}

impl std::str::FromStr for FleetSpec {
    type Err = FleetSpecError;

    fn from_str(spec: &str) -> Result<FleetSpec, FleetSpecError> {
        FleetSpec::parse(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn group(count: u32, template: &str, slots: u32) -> AgentGroup {
        AgentGroup {
            count,
            template: template.to_string(),
            slots,
        }
    }

    fn error(spec: &str) -> String {
        FleetSpec::parse(spec).unwrap_err().to_string()
    }

    #[test]
    fn reads_the_full_form() {
        let spec = FleetSpec::parse("3 linux-medium:2, 1 linux-large:4").unwrap();
        assert_eq!(
            spec.groups,
            [group(3, "linux-medium", 2), group(1, "linux-large", 4)]
        );
        assert_eq!(spec.templates(), ["linux-medium", "linux-large"]);
        assert_eq!(spec.agents(), 4);
    }

    #[test]
    fn count_and_slots_default_to_one() {
        let spec = FleetSpec::parse("linux-medium:2,2 linux-large, linux-small").unwrap();
        assert_eq!(
            spec.groups,
            [
                group(1, "linux-medium", 2),
                group(2, "linux-large", 1),
                group(1, "linux-small", 1)
            ]
        );
    }

    #[test]
    fn reads_nx_distribute_on() {
        let spec = FleetSpec::parse("5 linux-medium-js, 5 linux-large-js").unwrap();
        assert_eq!(
            spec.groups,
            [
                group(5, "linux-medium-js", 1),
                group(5, "linux-large-js", 1)
            ]
        );
        let spec =
            FleetSpec::parse("3 linux-small-js, 2 linux-medium-js, 1 linux-large-js").unwrap();
        assert_eq!(
            spec.templates(),
            ["linux-small-js", "linux-medium-js", "linux-large-js"]
        );
    }

    #[test]
    fn templates_are_listed_once() {
        let spec = FleetSpec::parse("1 a:1, 2 b, 3 a:4").unwrap();
        assert_eq!(spec.templates(), ["a", "b"]);
    }

    #[test]
    fn displays_the_full_form() {
        let spec = FleetSpec::parse(" linux-medium ,2 linux-large:3").unwrap();
        assert_eq!(spec.to_string(), "1 linux-medium:1, 2 linux-large:3");
    }

    #[test]
    fn errors_quote_the_bad_part() {
        assert_eq!(
            error("  "),
            "the agent spec is empty; expected `COUNT TEMPLATE:SLOTS, ...`, e.g. `3 linux-medium:2, 1 linux-large:4`"
        );
        assert_eq!(
            error("3 a:2,, 1 b"),
            "`3 a:2,, 1 b` has an empty group (two commas in a row, or one at an end); expected `COUNT TEMPLATE:SLOTS` between commas"
        );
        assert_eq!(
            error("3 a:2,"),
            "`3 a:2,` has an empty group (two commas in a row, or one at an end); expected `COUNT TEMPLATE:SLOTS` between commas"
        );
        assert_eq!(
            error("3 linux medium:2"),
            "`3 linux medium:2` has too many words; expected `COUNT TEMPLATE:SLOTS`, e.g. `3 linux-medium:2`"
        );
        assert_eq!(
            error("1 a, x linux-medium:2"),
            "`x linux-medium:2`: COUNT `x` is not a whole number from 1 to 100000"
        );
        assert_eq!(
            error("0 linux-medium"),
            "`0 linux-medium`: COUNT `0` is not a whole number from 1 to 100000"
        );
        assert_eq!(
            error("-1 linux-medium"),
            "`-1 linux-medium`: COUNT `-1` is not a whole number from 1 to 100000"
        );
        assert_eq!(
            error("3 linux-medium:"),
            "`3 linux-medium:`: SLOTS `` is not a whole number from 1 to 1024"
        );
        assert_eq!(
            error("3 linux-medium:+2"),
            "`3 linux-medium:+2`: SLOTS `+2` is not a whole number from 1 to 1024"
        );
        assert_eq!(
            error("3 linux-medium:0"),
            "`3 linux-medium:0`: SLOTS `0` is not a whole number from 1 to 1024"
        );
        assert_eq!(
            error("3 :2"),
            "`3 :2` has no TEMPLATE; expected `COUNT TEMPLATE:SLOTS`, e.g. `3 linux-medium:2`"
        );
        assert_eq!(
            error("3 a:99999999999"),
            "`3 a:99999999999`: SLOTS `99999999999` is not a whole number from 1 to 1024"
        );
    }

    fn arb_group() -> impl Strategy<Value = AgentGroup> {
        (1..=MAX_AGENTS, "[a-z][a-z0-9_.-]{0,12}", 1..=MAX_SLOTS).prop_map(
            |(count, template, slots)| AgentGroup {
                count,
                template,
                slots,
            },
        )
    }

    proptest! {
        #[test]
        fn display_round_trips(groups in prop::collection::vec(arb_group(), 1..5)) {
            let spec = FleetSpec { groups };
            prop_assert_eq!(FleetSpec::parse(&spec.to_string()), Ok(spec));
        }

        #[test]
        fn parse_never_panics(text in "[ -~]{0,40}") {
            let _ = FleetSpec::parse(&text);
        }
    }
}
