//! A lower bound on any schedule's makespan: the critical path with true durations, the total
//! work over the total slots, and, under assignment rules, for every set of agent types that
//! some tasks are confined to, the work of those tasks over the slots of that set.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use crate::fleet::FleetSpec;
use crate::rules::RuleSet;
use crate::task::TaskSpec;

use super::true_durations;

pub fn lower_bound(
    tasks: &[TaskSpec],
    durations: &HashMap<String, Duration>,
    rules: &RuleSet,
    fleet: &FleetSpec,
) -> Duration {
    let truth = true_durations(tasks, durations);
    let ms: Vec<u64> = truth.iter().map(|d| d.as_millis() as u64).collect();
    let cp = critical_path_ms(tasks, &ms);

    let templates = fleet.templates();
    let slots_of = |set: &BTreeSet<&str>| -> u64 {
        fleet
            .groups
            .iter()
            .filter(|g| set.contains(g.template.as_str()))
            .map(|g| u64::from(g.count) * u64::from(g.slots))
            .sum()
    };
    // The agent types each task may run on.
    let eligible: Vec<BTreeSet<&str>> = tasks
        .iter()
        .map(|t| {
            let rule = rules.rule_for(&t.project, &t.target, t.configuration.as_deref());
            templates
                .iter()
                .copied()
                .filter(|tpl| rules.allows(rule, tpl))
                .collect()
        })
        .collect();
    let mut sets: BTreeSet<BTreeSet<&str>> = eligible.iter().cloned().collect();
    sets.insert(templates.iter().copied().collect());
    let mut work_bound = 0u64;
    for set in &sets {
        let slots = slots_of(set);
        if slots == 0 {
            continue;
        }
        let work: u64 = eligible
            .iter()
            .zip(&ms)
            .filter(|(e, _)| e.is_subset(set))
            .map(|(_, m)| m)
            .sum();
        work_bound = work_bound.max(work.div_ceil(slots));
    }
    Duration::from_millis(cp.max(work_bound))
}

/// The longest path through the graph, each task weighing `ms[i]`.
pub fn critical_path_ms(tasks: &[TaskSpec], ms: &[u64]) -> u64 {
    let index: HashMap<&str, usize> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.as_str(), i))
        .collect();
    let mut finish: Vec<Option<u64>> = vec![None; tasks.len()];
    // Iterative depth-first evaluation (graphs may be deep).
    for root in 0..tasks.len() {
        let mut stack = vec![(root, false)];
        while let Some((i, expanded)) = stack.pop() {
            if finish[i].is_some() {
                continue;
            }
            let deps = tasks[i]
                .depends_on
                .iter()
                .filter_map(|d| index.get(d.as_str()).copied());
            if expanded {
                let start = deps.filter_map(|d| finish[d]).max().unwrap_or(0);
                finish[i] = Some(start + ms[i]);
            } else {
                stack.push((i, true));
                stack.extend(deps.filter(|&d| finish[d].is_none()).map(|d| (d, false)));
            }
        }
    }
    finish.into_iter().flatten().max().unwrap_or(0)
}
