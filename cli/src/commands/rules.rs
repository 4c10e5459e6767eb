//! `drover rules check` and `drover rules explain`.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use drover_scheduler::RuleSet;
use drover_scheduler::fleet::FleetSpec;
use drover_scheduler::graph::parse_graph_file;

use crate::error::CliError;

#[derive(Subcommand, Debug)]
pub enum RulesCommand {
    /// Validate an assignment rules file: exit 0 when valid, else exit 2 with every error.
    Check(CheckArgs),
    /// For each task of a graph, the rule it gets and why.
    Explain(ExplainArgs),
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    pub file: PathBuf,
    /// The fleet, "COUNT TEMPLATE:SLOTS, ..." (e.g. "3 linux-medium:2, 1 linux-large:4"): every
    /// agent type the rules name must be in it.
    #[arg(long)]
    pub agents: Option<String>,
}

#[derive(Args, Debug)]
pub struct ExplainArgs {
    #[arg(long)]
    pub rules: PathBuf,
    #[arg(long)]
    pub graph: PathBuf,
    /// Print a JSON list of {task, rule, run_on}.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: RulesCommand) -> Result<u8, CliError> {
    match cmd {
        RulesCommand::Check(args) => check(args),
        RulesCommand::Explain(args) => explain(args),
    }
}

fn read(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path)
        .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))
}

pub fn load_rules(path: &Path) -> Result<RuleSet, CliError> {
    let shown = path.display().to_string();
    RuleSet::parse(&shown, &read(path)?).map_err(|e| CliError::Input(e.to_string()))
}

fn check(args: CheckArgs) -> Result<u8, CliError> {
    let rules = load_rules(&args.file)?;
    if let Some(spec) = &args.agents {
        let fleet =
            FleetSpec::parse(spec).map_err(|e| CliError::Usage(format!("--agents: {e}")))?;
        let known = fleet.templates();
        rules
            .check_agent_types(&known)
            .map_err(|e| CliError::Input(e.to_string()))?;
    }
    eprintln!(
        "{}: {} rule(s), valid",
        args.file.display(),
        rules.rules.len()
    );
    Ok(0)
}

fn explain(args: ExplainArgs) -> Result<u8, CliError> {
    let rules = load_rules(&args.rules)?;
    let shown = args.graph.display().to_string();
    let graph = parse_graph_file(&shown, &read(&args.graph)?)
        .map_err(|e| CliError::Input(e.to_string()))?
        .graph;
    let explanations: Vec<_> = graph
        .tasks
        .iter()
        .map(|t| {
            let mut e = rules.explain(&t.project, &t.target, t.configuration.as_deref());
            e.task = t.id.clone();
            e
        })
        .collect();
    if args.json {
        let records: Vec<_> = explanations.iter().map(|e| e.record()).collect();
        out!(
            "{}",
            serde_json::to_string_pretty(&records).map_err(|e| CliError::Io(e.to_string()))?
        );
    } else {
        let width = explanations.iter().map(|e| e.task.len()).max().unwrap_or(0);
        for e in &explanations {
            let agents = if e.run_on.is_empty() {
                "any agent type".to_string()
            } else {
                e.run_on
                    .iter()
                    .map(|r| match r.parallelism {
                        Some(p) => format!("{} (parallelism {p})", r.agent),
                        None => r.agent.clone(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            out!(
                "{:width$}  -> {agents}\n{:width$}     {}",
                e.task,
                "",
                e.reason
            );
        }
    }
    Ok(0)
}
