//! Read-only snapshots for operators and the main job.

use super::*;

impl Scheduler {
    pub fn progress(&self, run_id: &str, submission: Option<u64>) -> Option<Progress> {
        let run = &self.runs[*self.run_index.get(run_id)?];
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
        let run = &self.runs[*self.run_index.get(run_id)?];
        Some(RunSummary {
            id: run.id.clone(),
            ci_execution_id: run.spec.ci_execution_id.clone(),
            state: match run.done {
                None if run.stopping.is_some() => "stopping",
                None => "running",
                Some(true) => "succeeded",
                Some(false) => "failed",
            },
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
        let run = &self.runs[self.run_index[run_id]];
        Some(RunView {
            id: summary.id,
            ci_execution_id: summary.ci_execution_id,
            state: summary.state,
            progress: summary.progress,
            tasks: run.tasks.iter().map(TaskState::summary).collect(),
        })
    }

    pub fn agent_views(&self) -> Vec<AgentView> {
        self.agents
            .values()
            .map(|a| AgentView {
                id: a.id,
                name: a.name.clone(),
                template: a.template.clone(),
                slots: a.slots,
                ci_execution_id: a.ci_execution_id.clone(),
                connected: a.connected,
                draining: a.draining,
                running: a
                    .leases
                    .iter()
                    .filter_map(|l| self.leases.get(l))
                    .map(|l| self.runs[l.run].tasks[l.task].spec.id.clone())
                    .collect(),
            })
            .collect()
    }
}
