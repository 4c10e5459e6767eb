//! The binning baseline ([`Policy::Binning`]): the connected agents are split statically
//! between targets, each target getting a share of agents proportional to its estimated work,
//! and a task runs only on an agent of its target's bin. This is the "one agent group per
//! target" set-up that leaves agents idle while another bin still has work; Drover offers it
//! only so the simulator and the benchmark can measure it.

use std::collections::{BTreeMap, BinaryHeap, HashMap};

use super::ready::{BinPlan, Entry, Key};
use super::*;

impl Scheduler {
    /// (Re)plans the bins of run `r` after a submission and files its ready tasks under them.
    pub(super) fn plan_bins(&mut self, r: usize) {
        if self.config.policy != Policy::Binning {
            return;
        }
        let run = &self.runs[r];
        // Estimated work per target, in a stable order.
        let mut work: BTreeMap<&str, u64> = BTreeMap::new();
        for t in &run.tasks {
            let ms = self.estimates.estimate(&t.spec).as_millis() as u64;
            *work.entry(t.spec.target.as_str()).or_default() += ms.max(1);
        }
        let targets: Vec<(&str, u64)> = work.into_iter().collect();
        let agents: Vec<&Agent> = self
            .agents
            .iter()
            .filter(|a| a.is_live() && !a.stopped && assign::serves(&self.runs, a, r))
            .collect();
        // Which agents may run some task of each target.
        let eligible: Vec<Vec<usize>> = targets
            .iter()
            .map(|(target, _)| {
                (0..agents.len())
                    .filter(|&k| {
                        run.tasks.iter().any(|t| {
                            t.spec.target == *target
                                && run.spec.rules.allows(t.class, &agents[k].template)
                        })
                    })
                    .collect()
            })
            .collect();
        let shares = apportion(
            &targets.iter().map(|(_, w)| *w).collect::<Vec<_>>(),
            agents.len(),
        );
        // Targets with the fewest eligible agents choose first; each takes the free eligible
        // agents that are eligible for the fewest targets.
        let mut order: Vec<usize> = (0..targets.len()).collect();
        order.sort_by_key(|&b| (eligible[b].len(), std::cmp::Reverse(targets[b].1), b));
        let breadth: Vec<usize> = (0..agents.len())
            .map(|k| eligible.iter().filter(|e| e.contains(&k)).count())
            .collect();
        let mut bins_of: Vec<Vec<u32>> = vec![Vec::new(); agents.len()];
        let mut load: Vec<u64> = vec![0; agents.len()];
        for &b in &order {
            let mut free: Vec<usize> = eligible[b]
                .iter()
                .copied()
                .filter(|&k| bins_of[k].is_empty())
                .collect();
            free.sort_by_key(|&k| (breadth[k], k));
            let take = shares[b].min(free.len());
            let share = targets[b].1 / take.max(1) as u64;
            for &k in &free[..take] {
                bins_of[k].push(b as u32);
                load[k] += share;
            }
            if take == 0 {
                // More targets than agents: share the least loaded eligible agent.
                if let Some(&k) = eligible[b].iter().min_by_key(|&&k| (load[k], k)) {
                    bins_of[k].push(b as u32);
                    load[k] += targets[b].1;
                }
            }
        }
        // An agent left without a bin joins the bin it may serve with the most work per agent.
        for k in 0..agents.len() {
            if !bins_of[k].is_empty() {
                continue;
            }
            let members = |b: usize| bins_of.iter().filter(|x| x.contains(&(b as u32))).count();
            if let Some(b) = (0..targets.len())
                .filter(|&b| eligible[b].contains(&k))
                .max_by_key(|&b| (targets[b].1 / (members(b) as u64 + 1), std::cmp::Reverse(b)))
            {
                bins_of[k].push(b as u32);
            }
        }
        let target_bin: HashMap<String, u32> = targets
            .iter()
            .enumerate()
            .map(|(b, (t, _))| (t.to_string(), b as u32))
            .collect();
        let task_bin: Vec<u32> = run
            .tasks
            .iter()
            .map(|t| target_bin[t.spec.target.as_str()])
            .collect();
        let agent_bins: HashMap<AgentId, Vec<u32>> = agents
            .iter()
            .zip(bins_of)
            .map(|(a, bins)| (a.id, bins))
            .collect();
        let run = &mut self.runs[r];
        // File the ready entries again under their (possibly new) bins.
        let entries: Vec<Entry> = run
            .ready
            .classes
            .drain()
            .flat_map(|(_, heap)| heap.into_vec())
            .collect();
        run.ready.bins = Some(BinPlan {
            task_bin,
            agent_bins,
        });
        let mut classes: HashMap<Key, BinaryHeap<Entry>> = HashMap::new();
        for e in entries {
            let key = Key {
                class: run.tasks[e.task].class,
                bin: run.ready.bins.as_ref().map_or(0, |b| b.task_bin[e.task]),
            };
            classes.entry(key).or_default().push(e);
        }
        run.ready.classes = classes;
    }
}

/// Splits `agents` between bins in proportion to `work` (largest remainder), every bin getting
/// at least one agent while there are enough; bins beyond the agent count get none.
pub(super) fn apportion(work: &[u64], agents: usize) -> Vec<usize> {
    let n = work.len();
    let mut shares = vec![0usize; n];
    if n == 0 || agents == 0 {
        return shares;
    }
    let total: u64 = work.iter().sum::<u64>().max(1);
    // Bins by work, largest first.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&b| (std::cmp::Reverse(work[b]), b));
    if n >= agents {
        for &b in &order[..agents] {
            shares[b] = 1;
        }
        return shares;
    }
    let exact: Vec<f64> = work
        .iter()
        .map(|&w| w as f64 * agents as f64 / total as f64)
        .collect();
    for b in 0..n {
        shares[b] = (exact[b].floor() as usize).max(1);
    }
    let mut given: usize = shares.iter().sum();
    // Too many (the minimum of one pushed it over): take from the largest shares.
    while given > agents {
        let b = (0..n)
            .filter(|&b| shares[b] > 1)
            .max_by(|&a, &b| {
                (shares[a] as f64 - exact[a])
                    .total_cmp(&(shares[b] as f64 - exact[b]))
                    .then(b.cmp(&a))
            })
            .expect("some bin has more than one agent");
        shares[b] -= 1;
        given -= 1;
    }
    // Too few: the largest remainders get one more.
    while given < agents {
        let b = (0..n)
            .max_by(|&a, &b| {
                (exact[a] - shares[a] as f64)
                    .total_cmp(&(exact[b] - shares[b] as f64))
                    .then(b.cmp(&a))
            })
            .expect("there are bins");
        shares[b] += 1;
        given += 1;
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::apportion;

    #[test]
    fn shares_follow_work_and_every_bin_gets_an_agent() {
        assert_eq!(apportion(&[300, 100], 4), vec![3, 1]);
        assert_eq!(apportion(&[1000, 1, 1], 5), vec![3, 1, 1]);
        assert_eq!(apportion(&[5, 5, 5], 2).iter().sum::<usize>(), 2);
        assert_eq!(apportion(&[], 3), Vec::<usize>::new());
    }
}
