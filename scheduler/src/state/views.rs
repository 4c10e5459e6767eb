//! Read-only snapshots for operators, the main job and metrics. None of them changes state.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;

/// Progress of a run or submission.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub total: usize,
    pub queued: usize,
    pub running: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub skipped: usize,
}

/// A snapshot of an agent for operators.
#[derive(Clone, Debug)]
pub struct AgentView {
    pub id: AgentId,
    pub name: String,
    pub template: String,
    pub slots: u32,
    pub ci_execution_id: Option<String>,
    pub connected: bool,
    pub draining: bool,
    /// When it was last heard from, on the scheduler's clock.
    pub last_seen: Duration,
    pub version: String,
    pub running: Vec<String>,
}

/// A run's state and counts, without its tasks: for listings and metrics.
#[derive(Clone, Debug)]
pub struct RunSummary {
    pub id: String,
    pub ci_execution_id: String,
    pub state: RunState,
    /// When it was opened, by the wall clock (milliseconds since the Unix epoch).
    pub opened_unix_ms: u64,
    pub started_by: String,
    pub cache_namespace: Option<String>,
    pub progress: Progress,
}

/// A snapshot of a run, with every task, for operators and the main job.
#[derive(Clone, Debug)]
pub struct RunView {
    pub id: String,
    pub ci_execution_id: String,
    pub state: RunState,
    pub opened_unix_ms: u64,
    pub started_by: String,
    pub cache_namespace: Option<String>,
    pub progress: Progress,
    pub tasks: Vec<TaskSummary>,
}

impl RunView {
    pub fn summary(&self) -> RunSummary {
        RunSummary {
            id: self.id.clone(),
            ci_execution_id: self.ci_execution_id.clone(),
            state: self.state,
            opened_unix_ms: self.opened_unix_ms,
            started_by: self.started_by.clone(),
            cache_namespace: self.cache_namespace.clone(),
            progress: self.progress,
        }
    }
}

/// Per launch template: what an autoscaler and a dashboard want to know.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TemplateGauges {
    /// Connected (live) agents.
    pub agents: usize,
    /// Slots of those agents that hold no lease and may take one.
    pub free_slots: usize,
    /// Ready tasks this template may run (a task several templates may run counts for each).
    pub ready: usize,
    /// Tasks running on its agents.
    pub running: usize,
}

/// The scheduler's gauges, computed on demand.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Gauges {
    pub agents_connected: usize,
    pub slots: usize,
    pub running: usize,
    pub ready: usize,
    pub queued: usize,
    pub runs_active: usize,
    pub by_template: BTreeMap<String, TemplateGauges>,
}

impl Scheduler {
    /// Whether the scheduler knows this run (it was opened and not forgotten).
    pub fn has_run(&self, run_id: &str) -> bool {
        self.runs.contains(run_id)
    }

    /// The cache namespace of a run's tasks (`None`: the default one, or no such run).
    pub fn cache_namespace(&self, run_id: &str) -> Option<&str> {
        let r = self.runs.find(run_id).ok()?;
        self.runs[r].spec.cache_namespace.as_deref()
    }

    /// Every active lease: its id, fencing token and run (to honour the credentials of
    /// leases restored after a restart).
    pub fn active_leases(&self) -> Vec<(LeaseId, u64, String)> {
        self.leases
            .iter()
            .map(|(id, l)| (*id, l.token, self.runs[l.run].id.clone()))
            .collect()
    }

    /// Every running lease: its agent, run and task.
    pub fn running_leases(&self) -> Vec<(AgentId, String, String)> {
        self.leases
            .iter()
            .map(|(_, l)| {
                let run = &self.runs[l.run];
                (l.agent, run.id.clone(), run.tasks[l.task].spec.id.clone())
            })
            .collect()
    }

    /// The id of the run a request names.
    pub fn resolve(&self, run: &RunRef) -> Result<String, SchedError> {
        self.runs.resolve(run).map(|r| self.runs[r].id.clone())
    }

    /// The newest run of a CI execution.
    pub fn run_for_execution(&self, ci_execution_id: &str) -> Option<&str> {
        self.runs
            .newest_of(ci_execution_id)
            .map(|r| self.runs[r].id.as_str())
    }

    /// The runs that have ended (succeeded or failed), in the order they were opened.
    pub fn ended_runs(&self) -> impl Iterator<Item = &str> {
        self.runs
            .iter()
            .filter(|r| !r.is_active())
            .map(|r| r.id.as_str())
    }

    pub fn progress(&self, run_id: &str, submission: Option<u64>) -> Option<Progress> {
        let run = &self.runs[self.runs.find(run_id).ok()?];
        let members: Box<dyn Iterator<Item = &TaskState>> = match submission {
            Some(s) => Box::new(
                run.submissions
                    .iter()
                    .find(|x| x.id == s)?
                    .tasks
                    .iter()
                    .map(|&i| &run.tasks[i]),
            ),
            None => Box::new(run.tasks.iter()),
        };
        let mut p = Progress::default();
        for t in members {
            p.total += 1;
            match t.status() {
                TaskStatus::Queued => p.queued += 1,
                TaskStatus::Running => p.running += 1,
                TaskStatus::Succeeded => p.succeeded += 1,
                TaskStatus::Failed => p.failed += 1,
                TaskStatus::Skipped => p.skipped += 1,
            }
        }
        Some(p)
    }

    pub fn run_summary(&self, run_id: &str) -> Option<RunSummary> {
        let run = &self.runs[self.runs.find(run_id).ok()?];
        Some(RunSummary {
            id: run.id.clone(),
            ci_execution_id: run.spec.ci_execution_id.clone(),
            state: run.state(),
            opened_unix_ms: run.opened_unix_ms,
            started_by: run.spec.started_by.clone(),
            cache_namespace: run.spec.cache_namespace.clone(),
            progress: self.progress(run_id, None)?,
        })
    }

    /// Every run's summary, in opening order. Cheap: no task is copied.
    pub fn run_summaries(&self) -> Vec<RunSummary> {
        self.runs
            .iter()
            .filter_map(|r| self.run_summary(&r.id))
            .collect()
    }

    pub fn run_view(&self, run_id: &str) -> Option<RunView> {
        let summary = self.run_summary(run_id)?;
        let run = &self.runs[self.runs.find(run_id).ok()?];
        Some(RunView {
            id: summary.id,
            ci_execution_id: summary.ci_execution_id,
            state: summary.state,
            opened_unix_ms: summary.opened_unix_ms,
            started_by: summary.started_by,
            cache_namespace: summary.cache_namespace,
            progress: summary.progress,
            tasks: run.tasks.iter().map(TaskState::summary).collect(),
        })
    }

    pub fn agent_views(&self) -> Vec<AgentView> {
        self.agents
            .iter()
            .map(|a| AgentView {
                id: a.id,
                name: a.name.clone(),
                template: a.template.clone(),
                slots: a.slots,
                ci_execution_id: a.ci_execution_id.clone(),
                connected: a.is_live(),
                draining: a.draining,
                last_seen: a.last_seen,
                version: a.version.clone(),
                running: a
                    .leases()
                    .iter()
                    .filter_map(|&l| self.leases.get(l))
                    .map(|l| self.runs[l.run].tasks[l.task].spec.id.clone())
                    .collect(),
            })
            .collect()
    }

    /// The critical path of a run: the chain of tasks, each depending on the one before,
    /// whose durations add up the longest (what a run's wall time cannot go below). Ended
    /// tasks count with their duration, others with their estimate. Empty for an unknown run.
    pub fn critical_path(&self, run_id: &str) -> Vec<String> {
        let Ok(r) = self.runs.find(run_id) else {
            return Vec::new();
        };
        let run = &self.runs[r];
        let n = run.tasks.len();
        let deps: Vec<Vec<usize>> = run
            .tasks
            .iter()
            .map(|t| {
                t.spec
                    .depends_on
                    .iter()
                    .filter_map(|d| run.index.get(d).copied())
                    .collect()
            })
            .collect();
        let weight = |t: &TaskState| -> u64 {
            let ms = match t.status() {
                TaskStatus::Succeeded | TaskStatus::Failed => t.duration,
                TaskStatus::Skipped => Duration::ZERO,
                _ => self.estimates.estimate(&t.spec),
            };
            ms.as_millis() as u64
        };
        // Submissions add tasks after those they depend on, so index order is topological.
        let mut longest = vec![0u64; n];
        let mut via: Vec<Option<usize>> = vec![None; n];
        for i in 0..n {
            let best = deps[i]
                .iter()
                .copied()
                .max_by_key(|&d| (longest[d], std::cmp::Reverse(d)));
            longest[i] = weight(&run.tasks[i]) + best.map_or(0, |d| longest[d]);
            via[i] = best;
        }
        let Some(mut at) = (0..n).max_by_key(|&i| (longest[i], std::cmp::Reverse(i))) else {
            return Vec::new();
        };
        let mut path = vec![run.tasks[at].spec.id.clone()];
        while let Some(prev) = via[at] {
            path.push(run.tasks[prev].spec.id.clone());
            at = prev;
        }
        path.reverse();
        path
    }

    /// Gauges for `/metrics`: agents, slots, tasks, runs, and per launch template.
    pub fn gauges(&self) -> Gauges {
        let mut g = Gauges::default();
        for a in self.agents.iter() {
            g.running += a.running() as usize;
            if a.running() > 0 {
                g.by_template.entry(a.template.clone()).or_default().running +=
                    a.running() as usize;
            }
            if !a.is_live() {
                continue;
            }
            g.agents_connected += 1;
            g.slots += a.slots as usize;
            let t = g.by_template.entry(a.template.clone()).or_default();
            t.agents += 1;
            if a.serving() {
                t.free_slots += a.slots.saturating_sub(a.running()) as usize;
            }
        }
        for run in self.runs.iter() {
            if run.is_active() {
                g.runs_active += 1;
            }
            g.ready += run.ready_count();
            g.queued += run
                .tasks
                .iter()
                .filter(|t| t.status() == TaskStatus::Queued)
                .count();
            if run.ready_count() == 0 {
                continue;
            }
            // Ready tasks per class, then per template the class allows: the templates of the
            // agents seen and those the rules name.
            let mut per_class: BTreeMap<Class, usize> = BTreeMap::new();
            for t in &run.tasks {
                if t.phase() == Phase::Ready {
                    *per_class.entry(t.class).or_default() += 1;
                }
            }
            let mut templates: Vec<String> = g.by_template.keys().cloned().collect();
            for t in run.spec.rules.templates() {
                if !templates.iter().any(|x| x == t) {
                    templates.push(t.to_string());
                }
            }
            for template in templates {
                let ready: usize = per_class
                    .iter()
                    .filter(|(class, _)| run.spec.rules.allows(**class, &template))
                    .map(|(_, n)| n)
                    .sum();
                g.by_template.entry(template).or_default().ready += ready;
            }
        }
        g
    }
}
