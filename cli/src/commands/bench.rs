//! `drover bench schedule`: the scheduling benchmark over the public DAG sets, and
//! `drover bench decision`: the time of one scheduling decision at scale.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, Subcommand};
use drover_scheduler::sim::bench::{self, Options};
use drover_scheduler::sim::decision::DecisionBench;

use crate::error::CliError;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Simulate every graph of the DAG sets under critical-path (exact and noisy estimates),
    /// FIFO, binning and random, and print the table against lower bounds and optima.
    Schedule(ScheduleArgs),
    /// Time one scheduling decision (a freed slot picks its next task) at 100,000 ready tasks
    /// and 1,000 agents. Build with --release for meaningful figures.
    Decision(DecisionArgs),
}

#[derive(Args, Debug)]
pub struct ScheduleArgs {
    /// The folder holding wf/, stg/ and nx/.
    #[arg(long, env = "DROVER_DAG_DATA", default_value = "../shared/data/dags")]
    pub data: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write the report (Markdown table, or JSON with --json) to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Sigma of the lognormal noise on estimates.
    #[arg(long, default_value_t = 0.3)]
    pub sigma: f64,
    /// Seeds averaged for noisy estimates and the random policy (1..=N).
    #[arg(long, default_value_t = 5)]
    pub seeds: u64,
    /// Only cases whose graph name contains this, or of this family (wf, stg, nx).
    #[arg(long)]
    pub filter: Option<String>,
}

#[derive(Args, Debug)]
pub struct DecisionArgs {
    #[arg(long, default_value_t = 100_000)]
    pub tasks: usize,
    #[arg(long, default_value_t = 1_000)]
    pub agents: usize,
    /// Decisions to time.
    #[arg(long, default_value_t = 20_000)]
    pub steps: usize,
}

pub fn run(cmd: BenchCommand) -> Result<u8, CliError> {
    match cmd {
        BenchCommand::Schedule(args) => schedule(args),
        BenchCommand::Decision(args) => decision(args),
    }
}

fn schedule(args: ScheduleArgs) -> Result<u8, CliError> {
    if !(args.sigma >= 0.0 && args.sigma.is_finite()) {
        return Err(CliError::Usage("--sigma must be 0 or more".into()));
    }
    let files = read_corpus(&args.data)?;
    let corpus = bench::Corpus::parse(&files).map_err(|e| CliError::Input(e.to_string()))?;
    let options = Options {
        sigma: args.sigma,
        seeds: args.seeds.max(1),
        filter: args.filter,
    };
    let report = bench::run(&corpus, &options).map_err(|e| CliError::Input(e.to_string()))?;
    let text = if args.json {
        serde_json::to_string_pretty(&report).map_err(|e| CliError::Io(e.to_string()))? + "\n"
    } else {
        bench::table(&report)
    };
    out!("{}", text.trim_end_matches('\n'));
    if let Some(out) = &args.out {
        std::fs::write(out, &text)
            .map_err(|e| CliError::Io(format!("cannot write {}: {e}", out.display())))?;
    }
    Ok(0)
}

/// Reads `wf/*.json`, `stg/*.stg` with `stg/Case*_OPT.csv`, and `nx/*.json` under `dir`.
pub fn read_corpus(dir: &Path) -> Result<bench::CorpusFiles, CliError> {
    if !["wf", "stg", "nx"].iter().any(|d| dir.join(d).is_dir()) {
        return Err(CliError::Usage(format!(
            "no DAG data at {}: pass --data DIR (the folder holding wf/, stg/ and nx/, e.g. ../shared/data/dags)",
            dir.display()
        )));
    }
    let files = |sub: &str, ext: &str| -> Result<Vec<(String, String)>, CliError> {
        let mut paths: Vec<PathBuf> = match std::fs::read_dir(dir.join(sub)) {
            Ok(entries) => entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == ext))
                .collect(),
            Err(_) => Vec::new(),
        };
        paths.sort();
        paths
            .into_iter()
            .map(|p| {
                let text = std::fs::read_to_string(&p)
                    .map_err(|e| CliError::Io(format!("cannot read {}: {e}", p.display())))?;
                Ok((p.display().to_string(), text))
            })
            .collect()
    };
    Ok(bench::CorpusFiles {
        workflows: files("wf", "json")?,
        stg: files("stg", "stg")?,
        optima: files("stg", "csv")?,
        nx: files("nx", "json")?,
    })
}

fn decision(args: DecisionArgs) -> Result<u8, CliError> {
    if args.tasks < args.agents * 2 + args.steps + 1_000 {
        return Err(CliError::Usage(format!(
            "--tasks must be at least twice the agents plus the steps plus 1000 ({}), so the queue never runs dry",
            args.agents * 2 + args.steps + 1_000
        )));
    }
    let started = Instant::now();
    let mut bench = DecisionBench::new(args.tasks, args.agents);
    let setup = started.elapsed();
    for _ in 0..1_000 {
        bench.step();
    }
    let mut times: Vec<u128> = Vec::with_capacity(args.steps);
    let all = Instant::now();
    for _ in 0..args.steps {
        let t = Instant::now();
        bench.step();
        times.push(t.elapsed().as_nanos());
    }
    let total = all.elapsed();
    times.sort_unstable();
    let pct = |p: f64| times[((times.len() as f64 - 1.0) * p) as usize] as f64 / 1000.0;
    out!(
        "{} tasks, {} agents (2 slots each): set-up {setup:.2?}, {} decisions timed",
        args.tasks,
        args.agents,
        args.steps
    );
    out!(
        "one decision: mean {:.2} us, p50 {:.2} us, p99 {:.2} us",
        total.as_secs_f64() * 1e6 / args.steps.max(1) as f64,
        pct(0.5),
        pct(0.99)
    );
    Ok(0)
}
