//! Graph validation: duplicate ids, unknown dependencies, cycles (naming the tasks on one).

use std::collections::HashMap;

use super::GraphError;
use crate::task::TaskSpec;

/// Tasks with their dependency edges resolved to indices.
#[derive(Clone, Debug)]
pub struct TaskGraph {
    pub tasks: Vec<TaskSpec>,
    /// `deps[i]`: indices of the tasks `tasks[i]` depends on.
    pub deps: Vec<Vec<usize>>,
    /// `dependents[i]`: indices of the tasks that depend on `tasks[i]`.
    pub dependents: Vec<Vec<usize>>,
    pub index: HashMap<String, usize>,
}

impl TaskGraph {
    /// Validates a self-contained graph: every dependency must be in `tasks`.
    pub fn new(tasks: Vec<TaskSpec>) -> Result<TaskGraph, GraphError> {
        Self::with_known(tasks, |_| false)
    }

    /// Validates a graph whose tasks may also depend on tasks for which `known` is true
    /// (tasks an earlier submission to the same run already holds). Such edges are left out of
    /// `deps`; the caller resolves them.
    pub fn with_known(
        tasks: Vec<TaskSpec>,
        known: impl Fn(&str) -> bool,
    ) -> Result<TaskGraph, GraphError> {
        if tasks.is_empty() {
            return Err(GraphError::Empty);
        }
        let mut index = HashMap::with_capacity(tasks.len());
        for (i, t) in tasks.iter().enumerate() {
            if t.id.is_empty() {
                return Err(GraphError::EmptyId {
                    place: String::new(),
                });
            }
            if t.id.chars().any(char::is_control)
                || t.depends_on.iter().any(|d| d.chars().any(char::is_control))
            {
                let task = if t.id.chars().any(char::is_control) {
                    t.id.clone()
                } else {
                    t.depends_on
                        .iter()
                        .find(|d| d.chars().any(char::is_control))
                        .cloned()
                        .unwrap_or_default()
                };
                return Err(GraphError::ControlCharacter {
                    place: String::new(),
                    task,
                });
            }
            if t.parallelism == Some(0) {
                return Err(GraphError::ZeroParallelism {
                    place: String::new(),
                    task: t.id.clone(),
                });
            }
            if t.command.trim().is_empty() {
                return Err(GraphError::EmptyCommand {
                    place: String::new(),
                    task: t.id.clone(),
                });
            }
            if index.insert(t.id.clone(), i).is_some() {
                return Err(GraphError::DuplicateId {
                    place: String::new(),
                    task: t.id.clone(),
                });
            }
        }
        let mut deps = vec![Vec::new(); tasks.len()];
        let mut dependents = vec![Vec::new(); tasks.len()];
        for (i, t) in tasks.iter().enumerate() {
            for d in &t.depends_on {
                if *d == t.id {
                    return Err(GraphError::SelfDependency {
                        place: String::new(),
                        task: t.id.clone(),
                    });
                }
                match index.get(d) {
                    Some(&j) => {
                        if !deps[i].contains(&j) {
                            deps[i].push(j);
                            dependents[j].push(i);
                        }
                    }
                    None if known(d) => {}
                    None => {
                        return Err(GraphError::UnknownDependency {
                            place: String::new(),
                            task: t.id.clone(),
                            dependency: d.clone(),
                        });
                    }
                }
            }
        }
        if let Some(cycle) = find_cycle(&deps) {
            let mut names: Vec<String> = cycle.iter().map(|&i| tasks[i].id.clone()).collect();
            names.push(names[0].clone());
            return Err(GraphError::Cycle { cycle: names });
        }
        Ok(TaskGraph {
            tasks,
            deps,
            dependents,
            index,
        })
    }

    /// Indices in an order where every task comes after its dependencies.
    pub fn topological_order(&self) -> Vec<usize> {
        let n = self.tasks.len();
        let mut unmet: Vec<usize> = self.deps.iter().map(Vec::len).collect();
        let mut order: Vec<usize> = (0..n).filter(|&i| unmet[i] == 0).collect();
        let mut head = 0;
        while head < order.len() {
            let i = order[head];
            head += 1;
            for &d in &self.dependents[i] {
                unmet[d] -= 1;
                if unmet[d] == 0 {
                    order.push(d);
                }
            }
        }
        order
    }
}

/// One cycle in a dependency list (`deps[i]` = what `i` depends on), as the indices on it in
/// dependency order, or `None`. Iterative, so deep graphs do not overflow the stack.
pub fn find_cycle(deps: &[Vec<usize>]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let mut mark = vec![Mark::New; deps.len()];
    for root in 0..deps.len() {
        if mark[root] != Mark::New {
            continue;
        }
        // (node, next edge to look at)
        let mut path: Vec<(usize, usize)> = vec![(root, 0)];
        mark[root] = Mark::OnPath;
        while let Some(&mut (node, ref mut edge)) = path.last_mut() {
            if let Some(&next) = deps[node].get(*edge) {
                *edge += 1;
                match mark[next] {
                    Mark::New => {
                        mark[next] = Mark::OnPath;
                        path.push((next, 0));
                    }
                    Mark::OnPath => {
                        let start = path.iter().position(|&(n, _)| n == next).unwrap_or(0);
                        return Some(path[start..].iter().map(|&(n, _)| n).collect());
                    }
                    Mark::Done => {}
                }
            } else {
                mark[node] = Mark::Done;
                path.pop();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(id: &str, deps: &[&str]) -> TaskSpec {
        TaskSpec::new(id, "true").depends_on(deps.iter().copied())
    }

    #[test]
    fn accepts_a_dag_and_orders_it() {
        let g = TaskGraph::new(vec![t("c", &["b"]), t("b", &["a"]), t("a", &[])]).unwrap();
        let order: Vec<&str> = g
            .topological_order()
            .iter()
            .map(|&i| g.tasks[i].id.as_str())
            .collect();
        assert_eq!(order, ["a", "b", "c"]);
    }

    #[test]
    fn names_duplicates_and_unknown_dependencies() {
        let e = TaskGraph::new(vec![t("a", &[]), t("a", &[])]).unwrap_err();
        assert_eq!(e.to_string(), "task `a` is defined twice");
        let e = TaskGraph::new(vec![t("a", &["zz"])]).unwrap_err();
        assert_eq!(e.to_string(), "task `a` depends on unknown task `zz`");
        let e = TaskGraph::new(vec![t("a", &["a"])]).unwrap_err();
        assert_eq!(e.to_string(), "task `a` depends on itself");
    }

    #[test]
    fn names_the_tasks_on_a_cycle() {
        let e = TaskGraph::new(vec![
            t("root", &[]),
            t("x", &["root", "z"]),
            t("y", &["x"]),
            t("z", &["y"]),
        ])
        .unwrap_err();
        let GraphError::Cycle { cycle } = &e else {
            panic!("{e}")
        };
        assert_eq!(cycle.first(), cycle.last());
        let mut on_cycle: Vec<&str> = cycle[1..].iter().map(String::as_str).collect();
        on_cycle.sort();
        assert_eq!(on_cycle, ["x", "y", "z"]);
        assert!(!e.to_string().contains("root"), "{e}");
    }

    #[test]
    fn known_outside_dependencies_are_allowed() {
        let g = TaskGraph::with_known(vec![t("b", &["a"])], |id| id == "a").unwrap();
        assert!(g.deps[0].is_empty());
    }

    #[test]
    fn deep_chains_do_not_overflow() {
        let n = 200_000;
        let mut deps = vec![Vec::new(); n];
        for (i, d) in deps.iter_mut().enumerate().skip(1) {
            d.push(i - 1);
        }
        assert_eq!(find_cycle(&deps), None);
        deps[0].push(n - 1);
        assert_eq!(find_cycle(&deps).map(|c| c.len()), Some(n));
    }
}
