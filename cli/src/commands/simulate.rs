//! `drover simulate`: how long would this graph take on this fleet? Runs the coordinator's own
//! scheduler under a virtual clock, with simulated agents that take each task's true duration.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use drover_scheduler::RuleSet;
use drover_scheduler::fleet::FleetSpec;
use drover_scheduler::graph::parse_graph_file;
use drover_scheduler::sim::{self, Outcome, Setup, datasets, render};
use serde_json::json;

use crate::commands::rules::load_rules;
use crate::error::CliError;
use crate::human::Human;

#[derive(Args, Debug)]
pub struct SimulateArgs {
    /// The task graph (native YAML/JSON or Nx's `--graph=stdout` JSON).
    #[arg(long)]
    pub graph: PathBuf,
    /// The fleet, "COUNT TEMPLATE:SLOTS, ..." (e.g. "3 linux-medium:2, 1 linux-large:4").
    /// Several fleets separated by `;` are simulated one after the other.
    #[arg(long)]
    pub agents: String,
    /// Also simulate each fleet scaled: every group's COUNT times N, for each N listed
    /// (e.g. `--agents "1 linux:2" --sweep 1,2,4,8` tries 1, 2, 4 and 8 agents).
    #[arg(long, value_delimiter = ',')]
    pub sweep: Vec<u32>,
    /// Assignment rules (Nx schema).
    #[arg(long)]
    pub rules: Option<PathBuf>,
    /// True durations: a JSON object {"task id": milliseconds}, or a coordinator's
    /// DATA_DIR/durations.json (each task's learned average). The scheduler never sees them;
    /// it ranks by the graph's `estimate` hints. A task missing here takes its hint, else 10s.
    #[arg(long)]
    pub durations: Option<PathBuf>,
    /// critical-path, fifo, binning or random.
    #[arg(long, default_value = "critical-path")]
    pub policy: String,
    /// Seed of the random policy.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print {"policy", "makespan_ms", "lower_bound_ms", "utilization", "schedule": [...]}
    /// (a list of those, each with its "fleet", when several fleets are simulated).
    #[arg(long)]
    pub json: bool,
    /// Draw the timeline as an SVG Gantt chart (one row per agent slot). With several fleets,
    /// one file per fleet: FILE with `-1`, `-2`, ... before the extension.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Workspaces: an agent's first task of the run also prepares its workspace, taking this
    /// much longer (cloning, init steps), unless the agent holds the repository already.
    #[arg(long)]
    pub cold_start: Option<Human>,
    /// With --cold-start: how many agents (the last of the fleet) hold the repository already.
    #[arg(long, default_value_t = 0, requires = "cold_start")]
    pub warm_agents: usize,
}

fn read(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path)
        .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))
}

/// The fleets to simulate: each `;`-separated SPEC, times each sweep factor.
fn fleets(agents: &str, sweep: &[u32]) -> Result<Vec<FleetSpec>, CliError> {
    let mut out = Vec::new();
    for spec in agents.split(';').filter(|s| !s.trim().is_empty()) {
        let fleet =
            FleetSpec::parse(spec).map_err(|e| CliError::Usage(format!("--agents: {e}")))?;
        if sweep.is_empty() {
            out.push(fleet);
            continue;
        }
        for &n in sweep {
            if n == 0 {
                return Err(CliError::Usage(
                    "--sweep: factors must be at least 1".into(),
                ));
            }
            let mut scaled = fleet.clone();
            for g in &mut scaled.groups {
                g.count = g.count.saturating_mul(n);
            }
            out.push(scaled);
        }
    }
    if out.is_empty() {
        return Err(CliError::Usage("--agents: the agent spec is empty".into()));
    }
    Ok(out)
}

pub fn run(args: SimulateArgs) -> Result<u8, CliError> {
    let policy = sim::parse_policy(&args.policy, args.seed).ok_or_else(|| {
        CliError::Usage(format!(
            "--policy: unknown policy `{}`; expected critical-path, fifo, binning or random",
            args.policy
        ))
    })?;
    let graph_path = args.graph.display().to_string();
    let graph = parse_graph_file(&graph_path, &read(&args.graph)?)
        .map_err(|e| CliError::Input(e.to_string()))?
        .graph;
    let rules = match &args.rules {
        Some(p) => load_rules(p)?,
        None => RuleSet::default(),
    };
    let durations = match &args.durations {
        Some(p) => datasets::parse_durations(&p.display().to_string(), &read(p)?)
            .map_err(|e| CliError::Input(e.to_string()))?,
        None => HashMap::<String, Duration>::new(),
    };
    let fleets = fleets(&args.agents, &args.sweep)?;
    let mut outcomes = Vec::new();
    for fleet in &fleets {
        let setup = Setup {
            tasks: &graph.tasks,
            durations: &durations,
            rules: &rules,
            fleet,
            policy,
            estimates: None,
            cold_start: args.cold_start.map(|c| sim::ColdStart {
                penalty: c.0,
                warm_agents: args.warm_agents,
            }),
        };
        let outcome = sim::simulate(&setup)
            .map_err(|e| CliError::Input(format!("{graph_path} on `{fleet}`: {e}")))?;
        outcomes.push(outcome);
    }
    if let Some(svg) = &args.svg {
        for (k, outcome) in outcomes.iter().enumerate() {
            let path = if outcomes.len() == 1 {
                svg.clone()
            } else {
                numbered(svg, k + 1)
            };
            std::fs::write(&path, render::svg(outcome))
                .map_err(|e| CliError::Io(format!("cannot write {}: {e}", path.display())))?;
        }
    }
    if args.json {
        let values: Vec<serde_json::Value> = outcomes
            .iter()
            .zip(&fleets)
            .map(|(o, f)| {
                let mut v = outcome_json(o);
                if fleets.len() > 1 {
                    v["fleet"] = json!(f.to_string());
                }
                v
            })
            .collect();
        let value = if values.len() == 1 {
            values.into_iter().next().unwrap_or_default()
        } else {
            serde_json::Value::Array(values)
        };
        out!("{value}");
        return Ok(0);
    }
    if outcomes.len() == 1 {
        out!("{}", render::text(&outcomes[0]).trim_end_matches('\n'));
    } else {
        out!(
            "{:<40} {:>7} {:>12} {:>12} {:>12}",
            "fleet",
            "slots",
            "makespan",
            "lower bound",
            "utilization"
        );
        for (o, f) in outcomes.iter().zip(&fleets) {
            let slots: u64 = f
                .groups
                .iter()
                .map(|g| u64::from(g.count) * u64::from(g.slots))
                .sum();
            out!(
                "{:<40} {:>7} {:>11.1}s {:>11.1}s {:>11.1}%",
                f.to_string(),
                slots,
                o.makespan.as_secs_f64(),
                o.lower_bound.as_secs_f64(),
                o.utilization * 100.0
            );
        }
    }
    Ok(0)
}

/// The JSON `drover simulate --json` prints for one fleet.
pub fn outcome_json(o: &Outcome) -> serde_json::Value {
    json!({
        "policy": o.policy,
        "makespan_ms": o.makespan.as_millis() as u64,
        "lower_bound_ms": o.lower_bound.as_millis() as u64,
        "utilization": (o.utilization * 10_000.0).round() / 10_000.0,
        "cold_starts": o.cold_starts,
        "schedule": o.schedule,
    })
}

/// `out.svg` → `out-2.svg`.
fn numbered(path: &Path, n: usize) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}-{n}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{n}"),
    };
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_fleets_and_sweeps() {
        let f = fleets("1 linux:2; 2 big:4", &[1, 3]).unwrap();
        let counts: Vec<u32> = f.iter().map(|f| f.groups[0].count).collect();
        assert_eq!(counts, vec![1, 3, 2, 6]);
        assert!(fleets("1 linux:2", &[0]).is_err());
        assert_eq!(
            numbered(Path::new("/tmp/a.svg"), 2),
            PathBuf::from("/tmp/a-2.svg")
        );
    }
}
