//! The scheduling benchmark behind `drover bench schedule`: every graph of the public DAG sets
//! simulated under critical-path (clairvoyant and with noisy estimates), FIFO, binning and
//! random, against a lower bound (or the proven optimum).
//!
//! - Workflows (`wf/`): measured runtimes are the true durations; fleets of 4 and 16
//!   one-slot agents.
//! - STG (`stg/`): on M identical processors (2, 4, 8, 16) as in the optimum files; compared
//!   with the proven optimum (or its lower bound, where only bounds are known).
//! - Nx (`nx/`): durations drawn per target (lognormal, see [`datasets::NX_DURATIONS`], seed
//!   [`NX_SEED`]) and the assignment rules [`NX_RULES`]: `test:e2e` only on `linux-large`,
//!   everything else on `linux-medium` or `linux-large`.
//!
//! Estimates: "clairvoyant" ranks with the true durations (as `estimate` hints); "noisy" with
//! each hint multiplied by `exp(N(0, sigma²))`, averaged over [`Options::seeds`] seeds. FIFO
//! and binning get exact hints (binning sizes its bins by estimated work); random is averaged
//! over the same seeds. Everything is seeded: the same options give the same table.

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;
use thiserror::Error;

use crate::fleet::FleetSpec;
use crate::rules::RuleSet;
use crate::state::Policy;
use crate::task::TaskSpec;

use super::datasets::{self, Dataset, DatasetError, Optimum};
use super::{Setup, SimError, simulate};

/// Seed of the Nx graph's drawn durations.
pub const NX_SEED: u64 = 2024;
/// Assignment rules of the Nx case.
pub const NX_RULES: &str = "\
assignment-rules:
  - targets: ['test:e2e']
    run-on:
      - agent: linux-large
  - targets: ['lint', 'build', 'test']
    run-on:
      - agent: linux-medium
      - agent: linux-large
";
/// Fleets of the Nx case.
pub const NX_FLEETS: &[&str] = &[
    "3 linux-medium:2, 1 linux-large:2",
    "6 linux-medium:2, 2 linux-large:2",
];
/// Fleets of the workflow cases.
pub const WF_FLEETS: &[&str] = &["4 worker:1", "16 worker:1"];

#[derive(Clone, Debug)]
pub struct Options {
    /// Noise of the estimates (sigma of the lognormal factor).
    pub sigma: f64,
    /// Seeds averaged for the noisy and random schedules: 1..=seeds.
    pub seeds: u64,
    /// Only cases whose name contains this.
    pub filter: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sigma: 0.3,
            seeds: 5,
            filter: None,
        }
    }
}

#[derive(Debug, Error)]
pub enum BenchError {
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    #[error("{case}: {source}")]
    Simulation { case: String, source: SimError },
}

/// One benchmark case: a graph on a fleet.
#[derive(Clone, Debug, Serialize)]
pub struct CaseResult {
    pub family: String,
    pub case: String,
    pub tasks: usize,
    pub fleet: String,
    pub slots: u64,
    /// `optimum` (STG), else `lower bound`.
    pub bound_kind: String,
    pub bound_ms: u64,
    pub clairvoyant_ms: u64,
    /// Mean over the seeds.
    pub noisy_ms: f64,
    pub fifo_ms: u64,
    pub binning_ms: u64,
    /// Mean over the seeds.
    pub random_ms: f64,
}

/// The headline figures and whether each target is met.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Geometric mean over every case of noisy CP / clairvoyant CP, minus one.
    pub noisy_vs_clairvoyant: f64,
    /// Mean over STG cases of clairvoyant CP / optimum, minus one.
    pub stg_clairvoyant_vs_optimum: f64,
    /// Mean over STG cases of noisy CP / optimum, minus one.
    pub stg_noisy_vs_optimum: f64,
    /// Per Nx case: 1 - noisy CP / FIFO (how much shorter than FIFO).
    pub nx_shorter_than_fifo: Vec<f64>,
    /// Per Nx case: 1 - noisy CP / binning.
    pub nx_shorter_than_binning: Vec<f64>,
    /// Geometric mean over every case of noisy CP / FIFO and noisy CP / binning, minus one.
    pub noisy_vs_fifo: f64,
    pub noisy_vs_binning: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub sigma: f64,
    pub seeds: u64,
    pub cases: Vec<CaseResult>,
    pub summary: Summary,
}

/// The graphs of a data folder, read.
pub struct Corpus {
    pub workflows: Vec<Dataset>,
    /// Each STG graph with its `N/randXXXX.stg` key.
    pub stg: Vec<(String, Dataset)>,
    pub optima: Vec<Optimum>,
    /// Nx-shaped graphs (no durations).
    pub nx: Vec<(String, Vec<TaskSpec>)>,
}

/// The files of a data folder, as `(path, text)`, read by the caller (this crate does no I/O):
/// `wf/*.json`, `stg/*.stg`, `stg/Case*_OPT.csv` and `nx/*.json`, each list sorted by path.
#[derive(Debug, Default)]
pub struct CorpusFiles {
    pub workflows: Vec<(String, String)>,
    pub stg: Vec<(String, String)>,
    pub optima: Vec<(String, String)>,
    pub nx: Vec<(String, String)>,
}

impl Corpus {
    /// Parses the files of a data folder.
    pub fn parse(files: &CorpusFiles) -> Result<Corpus, BenchError> {
        let mut corpus = Corpus {
            workflows: Vec::new(),
            stg: Vec::new(),
            optima: Vec::new(),
            nx: Vec::new(),
        };
        for (path, text) in &files.workflows {
            corpus.workflows.push(datasets::parse_workflow(path, text)?);
        }
        for (path, text) in &files.stg {
            let d = datasets::parse_stg(path, text)?;
            // `50-rand0002.stg` is `50/rand0002.stg` in the optimum files.
            let key = d.name.replacen('-', "/", 1) + ".stg";
            corpus.stg.push((key, d));
        }
        for (path, text) in &files.optima {
            corpus.optima.extend(datasets::parse_optima(path, text)?);
        }
        for (path, text) in &files.nx {
            let tasks = datasets::parse_nx_tasks(path, text)?;
            let name = Path::new(path)
                .file_stem()
                .map_or(path.clone(), |s| s.to_string_lossy().into_owned());
            corpus.nx.push((name, tasks));
        }
        Ok(corpus)
    }
}

struct Case<'a> {
    family: &'static str,
    name: String,
    data: &'a Dataset,
    rules: &'a RuleSet,
    fleet: FleetSpec,
    optimum: Option<u64>,
}

/// Runs every case of the corpus.
pub fn run(corpus: &Corpus, options: &Options) -> Result<Report, BenchError> {
    let no_rules = RuleSet::default();
    let nx_rules = RuleSet::parse("nx-rules.yaml", NX_RULES).expect("the built-in rules are valid");
    let nx_data: Vec<Dataset> = corpus
        .nx
        .iter()
        .map(|(name, tasks)| Dataset {
            name: name.clone(),
            durations: datasets::draw_durations(tasks, NX_SEED),
            tasks: tasks.clone(),
        })
        .collect();
    let optima: HashMap<(&str, u32), &Optimum> = corpus
        .optima
        .iter()
        .map(|o| ((o.file.as_str(), o.processors), o))
        .collect();

    let mut cases: Vec<Case> = Vec::new();
    for d in &corpus.workflows {
        for fleet in WF_FLEETS {
            cases.push(Case {
                family: "wf",
                name: d.name.clone(),
                data: d,
                rules: &no_rules,
                fleet: FleetSpec::parse(fleet).expect("a valid built-in fleet"),
                optimum: None,
            });
        }
    }
    for (key, d) in &corpus.stg {
        let mut ms: Vec<u32> = corpus
            .optima
            .iter()
            .filter(|o| o.file == *key)
            .map(|o| o.processors)
            .collect();
        ms.sort_unstable();
        ms.dedup();
        for m in ms {
            let o = optima[&(key.as_str(), m)];
            cases.push(Case {
                family: "stg",
                name: d.name.clone(),
                data: d,
                rules: &no_rules,
                fleet: FleetSpec::parse(&format!("{m} proc:1")).expect("a valid fleet"),
                optimum: Some(o.optimum * 1000),
            });
        }
    }
    for d in &nx_data {
        for fleet in NX_FLEETS {
            cases.push(Case {
                family: "nx",
                name: d.name.clone(),
                data: d,
                rules: &nx_rules,
                fleet: FleetSpec::parse(fleet).expect("a valid built-in fleet"),
                optimum: None,
            });
        }
    }
    if let Some(f) = &options.filter {
        cases.retain(|c| c.name.contains(f.as_str()) || c.family == f.as_str());
    }
    let results = cases
        .iter()
        .map(|c| run_case(c, options))
        .collect::<Result<Vec<_>, _>>()?;
    let summary = summarize(&results);
    Ok(Report {
        sigma: options.sigma,
        seeds: options.seeds,
        cases: results,
        summary,
    })
}

fn run_case(case: &Case, options: &Options) -> Result<CaseResult, BenchError> {
    let label = format!("{} on {}", case.name, case.fleet);
    let exact = datasets::with_hints(&case.data.tasks, &case.data.durations, 0.0, 0);
    let once = |tasks: &[TaskSpec], policy: Policy| -> Result<u64, BenchError> {
        let setup = Setup {
            tasks,
            durations: &case.data.durations,
            rules: case.rules,
            fleet: &case.fleet,
            policy,
            estimates: None,
            cold_start: None,
        };
        simulate(&setup)
            .map(|o| o.makespan.as_millis() as u64)
            .map_err(|source| BenchError::Simulation {
                case: label.clone(),
                source,
            })
    };
    let clairvoyant = once(&exact, Policy::CriticalPath)?;
    let fifo = once(&exact, Policy::Fifo)?;
    let binning = once(&exact, Policy::Binning)?;
    let mut noisy = 0.0;
    let mut random = 0.0;
    for seed in 1..=options.seeds {
        let hinted =
            datasets::with_hints(&case.data.tasks, &case.data.durations, options.sigma, seed);
        noisy += once(&hinted, Policy::CriticalPath)? as f64;
        random += once(&exact, Policy::Random { seed })? as f64;
    }
    let seeds = options.seeds.max(1) as f64;
    let bound = match case.optimum {
        Some(o) => o,
        None => super::lower_bound(
            &case.data.tasks,
            &case.data.durations,
            case.rules,
            &case.fleet,
        )
        .as_millis() as u64,
    };
    Ok(CaseResult {
        family: case.family.to_string(),
        case: case.name.clone(),
        tasks: case.data.tasks.len(),
        fleet: case.fleet.to_string(),
        slots: case
            .fleet
            .groups
            .iter()
            .map(|g| u64::from(g.count) * u64::from(g.slots))
            .sum(),
        bound_kind: if case.optimum.is_some() {
            "optimum"
        } else {
            "lower bound"
        }
        .into(),
        bound_ms: bound,
        clairvoyant_ms: clairvoyant,
        noisy_ms: noisy / seeds,
        fifo_ms: fifo,
        binning_ms: binning,
        random_ms: random / seeds,
    })
}

fn geomean(ratios: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = ratios.fold((0.0, 0usize), |(s, n), r| (s + r.ln(), n + 1));
    if n == 0 { 1.0 } else { (sum / n as f64).exp() }
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = xs.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 { 0.0 } else { sum / n as f64 }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b <= 0.0 { 1.0 } else { a / b }
}

fn summarize(cases: &[CaseResult]) -> Summary {
    let stg = || cases.iter().filter(|c| c.family == "stg");
    let nx = || cases.iter().filter(|c| c.family == "nx");
    Summary {
        noisy_vs_clairvoyant: geomean(
            cases
                .iter()
                .map(|c| ratio(c.noisy_ms, c.clairvoyant_ms as f64)),
        ) - 1.0,
        stg_clairvoyant_vs_optimum: mean(
            stg().map(|c| ratio(c.clairvoyant_ms as f64, c.bound_ms as f64)),
        ) - 1.0,
        stg_noisy_vs_optimum: mean(stg().map(|c| ratio(c.noisy_ms, c.bound_ms as f64))) - 1.0,
        nx_shorter_than_fifo: nx()
            .map(|c| 1.0 - ratio(c.noisy_ms, c.fifo_ms as f64))
            .collect(),
        nx_shorter_than_binning: nx()
            .map(|c| 1.0 - ratio(c.noisy_ms, c.binning_ms as f64))
            .collect(),
        noisy_vs_fifo: geomean(cases.iter().map(|c| ratio(c.noisy_ms, c.fifo_ms as f64))) - 1.0,
        noisy_vs_binning: geomean(cases.iter().map(|c| ratio(c.noisy_ms, c.binning_ms as f64)))
            - 1.0,
    }
}

fn secs(ms: f64) -> String {
    format!("{:.0}s", ms / 1000.0)
}

/// The report as a Markdown table and the summary.
pub fn table(report: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Makespan per case; each policy as a ratio to the bound (optimum for STG, lower bound otherwise).\n\
         CP = critical path; noisy = estimates off by a lognormal factor (sigma {}), mean of {} seeds.\n",
        report.sigma, report.seeds
    );
    let _ = writeln!(
        out,
        "| case | tasks | fleet | bound | CP clairvoyant | CP noisy | FIFO | binning | random | noisy vs FIFO | noisy vs binning |"
    );
    let _ = writeln!(
        out,
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for c in &report.cases {
        let b = c.bound_ms as f64;
        let x = |v: f64| format!("{:.3}", ratio(v, b));
        let _ = writeln!(
            out,
            "| {} {} | {} | {} | {} {} | {} | {} | {} | {} | {} | {:+.1}% | {:+.1}% |",
            c.family,
            c.case,
            c.tasks,
            c.fleet,
            secs(b),
            if c.bound_kind == "optimum" {
                "opt"
            } else {
                "lb"
            },
            x(c.clairvoyant_ms as f64),
            x(c.noisy_ms),
            x(c.fifo_ms as f64),
            x(c.binning_ms as f64),
            x(c.random_ms),
            (ratio(c.noisy_ms, c.fifo_ms as f64) - 1.0) * 100.0,
            (ratio(c.noisy_ms, c.binning_ms as f64) - 1.0) * 100.0,
        );
    }
    let s = &report.summary;
    let pct = |x: f64| format!("{:.2}%", x * 100.0);
    let list = |xs: &[f64]| xs.iter().map(|x| pct(*x)).collect::<Vec<_>>().join(", ");
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "- noisy CP vs clairvoyant CP (geometric mean, all cases): {} (target: within 3%) {}",
        pct(s.noisy_vs_clairvoyant),
        verdict(s.noisy_vs_clairvoyant <= 0.03)
    );
    let _ = writeln!(
        out,
        "- STG, clairvoyant CP vs optimum (mean): {} (target: within 2%) {}; with noisy estimates: {}",
        pct(s.stg_clairvoyant_vs_optimum),
        verdict(s.stg_clairvoyant_vs_optimum <= 0.02),
        pct(s.stg_noisy_vs_optimum)
    );
    let _ = writeln!(
        out,
        "- Nx with rules, noisy CP shorter than FIFO by: {} (target: at least 15%) {}",
        list(&s.nx_shorter_than_fifo),
        verdict(s.nx_shorter_than_fifo.iter().all(|x| *x >= 0.15))
    );
    let _ = writeln!(
        out,
        "- Nx with rules, noisy CP shorter than binning by: {} (target: at least 25%) {}",
        list(&s.nx_shorter_than_binning),
        verdict(s.nx_shorter_than_binning.iter().all(|x| *x >= 0.25))
    );
    let _ = writeln!(
        out,
        "- all cases, noisy CP vs FIFO: {:+.2}%, vs binning: {:+.2}% (geometric means)",
        s.noisy_vs_fifo * 100.0,
        s.noisy_vs_binning * 100.0
    );
    out
}

fn verdict(met: bool) -> &'static str {
    if met { "— met" } else { "— NOT met" }
}
