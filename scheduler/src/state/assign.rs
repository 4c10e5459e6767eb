//! Handing ready tasks to free slots: eligibility, capacity, run fairness, waiting reports.

use std::time::Duration;

use super::*;

impl Scheduler {
    /// Hands ready tasks to free slots until nothing more fits.
    ///
    /// Only agents in the free set are looked at (an agent joins it when it connects or a lease
    /// of it ends, and leaves it when it is full or cannot take work), so one decision does not
    /// scan the whole fleet. An idle agent that finds nothing speaks for every idle agent of the
    /// same launch template and CI execution: they are not asked again in this pass.
    pub(super) fn assign(&mut self, now: Duration) {
        if self.runs.ready_total() == 0 || self.assignment_deferred {
            return;
        }
        // Passes over the free agents, least loaded first, one task per agent per pass: work
        // spreads over machines instead of filling one while an identical one idles.
        let mut idle_and_unserved: Vec<(String, Option<String>)> = Vec::new();
        while self.runs.ready_total() > 0 && self.assign_pass(now, &mut idle_and_unserved) {}
        #[cfg(debug_assertions)]
        self.agents.check_free();
    }

    /// One pass of [`assign`](Self::assign): every free agent, least loaded first, may take one
    /// task. Returns whether another pass could grant more: an agent that took a task this pass
    /// still has room (agents that found nothing will not find more as the ready set shrinks).
    ///
    /// The free agents are walked through their index (see [`super::free`]), not sorted: a
    /// pass that grants one task looks at one agent, however large the idle fleet.
    fn assign_pass(
        &mut self,
        now: Duration,
        idle_and_unserved: &mut Vec<(String, Option<String>)>,
    ) -> bool {
        // Warm workspaces: when the load is equal, an agent that holds the repository of a
        // run with work waiting goes first (it need not clone and prepare).
        let mut wanted: Vec<String> = self
            .runs
            .iter()
            .filter(|r| r.ready_count() > 0 && !r.spec.repository.is_empty())
            .map(|r| r.spec.repository.clone())
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut order = self.agents.free_order(wanted);
        // Launch templates with a free slot now, and how many free agents each has.
        // (With one free agent there is no other template to leave work to.)
        let mut free_templates: Vec<(String, usize)> = if self.agents.free_count() > 1 {
            self.agents.free_templates()
        } else {
            Vec::new()
        };
        let mut again = false;
        while let Some(id) = self.agents.next_free(&mut order) {
            let Some(agent) = self.agents.get(id) else {
                continue;
            };
            let idle = agent.running() == 0;
            let kind = idle.then(|| (agent.template.clone(), agent.ci_execution_id.clone()));
            if kind.as_ref().is_some_and(|k| idle_and_unserved.contains(k)) {
                continue;
            }
            let mut avoided = false;
            let granted = match self.pick(id, &free_templates, &mut avoided) {
                Some((r, i)) => {
                    self.grant(now, id, r, i);
                    true
                }
                None => false,
            };
            let agent = self.agents.get(id).expect("a candidate is known");
            again |= granted && agent.can_take();
            if !agent.can_take() {
                if let Some(entry) = free_templates
                    .iter_mut()
                    .find(|(t, _)| *t == agent.template)
                {
                    entry.1 -= 1;
                }
            } else if let Some(kind) = kind
                && !granted
                && !avoided
                && self.config.policy != Policy::Binning
            {
                // (Under binning, agents of one template differ: each serves its own bins.)
                idle_and_unserved.push(kind);
            }
            if self.runs.ready_total() == 0 {
                break;
            }
        }
        again
    }

    /// The best ready task for one free slot of `agent`: runs take turns; within a run, the
    /// highest-ranked task of any class the agent may run that fits its capacity.
    pub(super) fn pick(
        &mut self,
        agent_id: AgentId,
        free_templates: &[(String, usize)],
        avoided: &mut bool,
    ) -> Option<(usize, usize)> {
        // The live runs, starting at the cursor and wrapping around.
        let live = self.runs.live().len();
        let start = self.runs.live_from(self.runs.turn);
        for k in 0..live {
            let r = self.runs.live()[(start + k) % live];
            let agent = self.agents.get(agent_id).expect("a candidate is known");
            if self.runs[r].ready_count() == 0
                || self.runs[r].stopping_after.is_some()
                || !serves(&self.runs, agent, r)
            {
                continue;
            }
            if let Some(i) = self.pick_in_run(agent_id, r, free_templates, avoided) {
                self.runs.turn = (r + 1) % self.runs.len();
                return Some((r, i));
            }
        }
        None
    }

    /// Within one run: the highest-ranked ready task the agent may run and has room for, except
    /// that tasks only this agent's launch template may run (among the templates with a free
    /// slot now) go before tasks that a free agent of another template could take instead.
    /// That keeps scarce agent types for the work only they can do, without ever leaving a
    /// slot idle while an eligible task waits.
    pub(super) fn pick_in_run(
        &mut self,
        agent_id: AgentId,
        r: usize,
        free_templates: &[(String, usize)],
        avoided: &mut bool,
    ) -> Option<usize> {
        let agent = self.agents.get(agent_id).expect("a candidate is known");
        let run = &self.runs[r];
        let rules = &run.spec.rules;
        let keys: Vec<(Key, bool)> = run
            .ready
            .classes
            .iter()
            .filter(|(key, heap)| {
                !heap.is_empty()
                    && rules.allows(key.class, &agent.template)
                    && run.ready.bin_allows(agent_id, **key)
            })
            .map(|(key, _)| {
                let elsewhere = run.ready.bins.is_some()
                    || free_templates
                        .iter()
                        .any(|(t, n)| *n > 0 && *t != agent.template && rules.allows(key.class, t));
                (*key, elsewhere)
            })
            .collect();
        let mut best: Option<(Key, Entry, bool)> = None;
        for (key, elsewhere) in keys {
            if let Some(entry) = self.best_fit(agent_id, r, key, avoided) {
                let better = match best {
                    None => true,
                    // Only this template may run it: it goes first.
                    Some((_, b, b_elsewhere)) => match (elsewhere, b_elsewhere) {
                        (false, true) => true,
                        (true, false) => false,
                        _ => entry > b,
                    },
                };
                if better {
                    best = Some((key, entry, elsewhere));
                }
            }
        }
        let (key, entry, _) = best?;
        // Remove the chosen entry from its heap (it is at or near the top).
        let heap = self.runs[r].ready.classes.get_mut(&key)?;
        let mut held_back = Vec::new();
        while let Some(top) = heap.pop() {
            if top == entry {
                break;
            }
            held_back.push(top);
        }
        heap.extend(held_back);
        Some(entry.task)
    }

    /// The highest-ranked entry of one queue that fits the agent now; drops stale entries.
    /// Sets `avoided` when a retry passed this agent over for another.
    pub(super) fn best_fit(
        &mut self,
        agent_id: AgentId,
        r: usize,
        key: Key,
        avoided: &mut bool,
    ) -> Option<Entry> {
        const LOOK_DEEPER: usize = 32;
        let agent = self.agents.get(agent_id).expect("a candidate is known");
        let run = &mut self.runs[r];
        let heap = run.ready.classes.get_mut(&key)?;
        // The common case: the top is ready and fits; leave the heap as it is.
        while let Some(top) = heap.peek() {
            let t = &run.tasks[top.task];
            if t.phase() != Phase::Ready {
                heap.pop(); // stale
                continue;
            }
            if t.avoid.is_empty() && fits(agent, r, t, &run.spec.rules) {
                return Some(*top);
            }
            break;
        }
        let mut held_back = Vec::new();
        let mut found = None;
        let newest_for = served_execution(&self.runs, r);
        let run = &mut self.runs[r];
        let heap = run.ready.classes.get_mut(&key)?;
        while let Some(top) = heap.pop() {
            let t = &run.tasks[top.task];
            if t.phase() != Phase::Ready {
                continue; // stale
            }
            held_back.push(top);
            // A retry prefers an agent it has not failed on, when one has a free slot now.
            let avoid = t.avoid.contains(&agent_id)
                && self.agents.iter().any(|a| {
                    a.id != agent_id
                        && a.can_take()
                        && !t.avoid.contains(&a.id)
                        && serves_execution(a, newest_for.as_deref())
                        && run.spec.rules.allows(t.class, &a.template)
                });
            *avoided |= avoid;
            if !avoid && fits(agent, r, t, &run.spec.rules) {
                found = Some(top);
                break;
            }
            if held_back.len() >= LOOK_DEEPER {
                break;
            }
        }
        heap.extend(held_back);
        found
    }

    /// Leases task `i` of run `r` to the agent under a new lease id and fencing token.
    pub(super) fn grant(&mut self, now: Duration, agent_id: AgentId, r: usize, i: usize) {
        let t = &self.runs[r].tasks[i];
        let (lease_id, token) = self.leases.grant(Lease {
            token: 0,
            agent: agent_id,
            run: r,
            task: i,
            granted_at: now,
            started: false,
            group: (r, t.class),
            cache: t.spec.cache,
        });
        self.place(agent_id, r, i, lease_id, token);
    }

    /// The task of a granted lease goes to its agent: the slot is taken, the agent is sent
    /// the lease and the main job hears that the task started.
    pub(super) fn place(
        &mut self,
        agent_id: AgentId,
        r: usize,
        i: usize,
        lease_id: LeaseId,
        token: u64,
    ) {
        let agent = self
            .agents
            .get_mut(agent_id)
            .expect("picked for a known agent");
        self.runs.take_ready(r, i, lease_id);
        let run = &mut self.runs[r];
        let t = &mut run.tasks[i];
        t.attempts += 1;
        t.agent = agent.name.clone();
        run.leased_any = true;
        if !run.waiting_reported.is_empty() {
            run.waiting_reported.remove(&t.class);
        }
        agent.take_slot(lease_id, (r, t.class), t.spec.cache);
        if !run.spec.repository.is_empty() && !agent.repositories.contains(&run.spec.repository) {
            agent.repositories.insert(run.spec.repository.clone());
        }
        let mut env = run.spec.env.clone();
        env.extend(t.spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let grant = LeaseGrant {
            lease: lease_id,
            token,
            run_id: run.id.clone(),
            task_id: t.spec.id.clone(),
            command: t.spec.command.clone(),
            env,
            timeout: t.spec.timeout.or(run.spec.default_timeout),
            attempt: t.attempts,
            repository: run.spec.repository.clone(),
            commit: run.spec.commit.clone(),
        };
        let event = RunEvent::TaskStarted {
            task: t.spec.id.clone(),
            submissions: t.submissions.clone(),
            agent: agent.name.clone(),
            template: agent.template.clone(),
            attempt: t.attempts,
        };
        self.actions.push(Action::Lease {
            agent: agent_id,
            grant,
        });
        self.actions.push(Action::Run {
            run_id: run.id.clone(),
            event,
        });
        self.agents.refresh(agent_id);
    }

    /// Reports, once per class, ready tasks that no connected agent may run.
    pub(super) fn report_waiting(&mut self) {
        for k in 0..self.runs.live().len() {
            let r = self.runs.live()[k];
            if self.runs[r].ready_count() == 0 || !self.runs[r].is_active() {
                continue;
            }
            let mut classes: Vec<Class> = self.runs[r]
                .ready
                .classes
                .iter()
                .filter(|(k, h)| !h.is_empty() && !self.runs[r].waiting_reported.contains(&k.class))
                .map(|(k, _)| k.class)
                .collect();
            classes.sort_unstable();
            classes.dedup();
            for class in classes {
                let run = &self.runs[r];
                let rules = &run.spec.rules;
                let served = self.agents.iter().any(|a| {
                    a.serving() && serves(&self.runs, a, r) && rules.allows(class, &a.template)
                });
                if served {
                    continue;
                }
                let tasks: Vec<String> = {
                    let mut ids: Vec<String> = run
                        .ready
                        .classes
                        .iter()
                        .filter(|(k, _)| k.class == class)
                        .flat_map(|(_, h)| h.iter())
                        .filter(|e| run.tasks[e.task].phase() == Phase::Ready)
                        .map(|e| run.tasks[e.task].spec.id.clone())
                        .collect();
                    ids.sort();
                    ids.dedup();
                    ids
                };
                if tasks.is_empty() {
                    continue;
                }
                let reason = match class {
                    Some(rule) => {
                        let types: Vec<String> = rules.rules[rule]
                            .run_on
                            .iter()
                            .map(|o| o.agent.clone())
                            .collect();
                        format!(
                            "waiting for an agent of type {} (assignment rule {} of {}); none is connected",
                            types.join(" or "),
                            rule + 1,
                            rules.path
                        )
                    }
                    None => "waiting for an agent; none is connected".to_string(),
                };
                let submissions = {
                    let mut s: Vec<u64> = tasks
                        .iter()
                        .flat_map(|id| run.tasks[run.index[id]].submissions.iter().copied())
                        .collect();
                    s.sort_unstable();
                    s.dedup();
                    s
                };
                let run_id = run.id.clone();
                self.runs[r].waiting_reported.insert(class);
                self.actions.push(Action::Run {
                    run_id,
                    event: RunEvent::Waiting {
                        submissions,
                        tasks,
                        reason,
                    },
                });
            }
        }
    }
}

/// Whether a ready task fits on the agent now: slots, the rule's (or task's) parallelism, and
/// one non-cacheable task at a time.
pub(super) fn fits(agent: &Agent, r: usize, t: &TaskState, rules: &crate::rules::RuleSet) -> bool {
    if agent.running() >= agent.slots {
        return false;
    }
    if !t.spec.cache && agent.non_cacheable() > 0 {
        return false;
    }
    let cap = t
        .class
        .and_then(|rule| rules.parallelism(rule, &agent.template))
        .or(t.spec.parallelism);
    cap.is_none_or(|cap| agent.in_group((r, t.class)) < cap)
}

/// Runs an agent serves: CI agents the newest run of their execution, others every run.
pub(super) fn serves(runs: &Runs, agent: &Agent, r: usize) -> bool {
    match &agent.ci_execution_id {
        Some(exec) => runs.newest_of(exec) == Some(r),
        None => true,
    }
}

/// The CI execution whose agents may serve run `r`: the run's own, when it is the newest run
/// of that execution.
fn served_execution(runs: &Runs, r: usize) -> Option<String> {
    let exec = &runs[r].spec.ci_execution_id;
    (runs.newest_of(exec) == Some(r)).then(|| exec.clone())
}

/// [`serves`] with [`served_execution`] worked out beforehand.
fn serves_execution(agent: &Agent, newest_for: Option<&str>) -> bool {
    match &agent.ci_execution_id {
        Some(exec) => newest_for == Some(exec.as_str()),
        None => true,
    }
}
