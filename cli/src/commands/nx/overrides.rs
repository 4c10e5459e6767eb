//! Task overrides after the Nx arguments (`drover nx -- run-many -t test -- --coverage`): Nx
//! gives them to the tasks the command names (not to the dependencies it adds), and so do the
//! agents, so the hashes match the main job's replay.

use drover_scheduler::TaskSpec;

/// The command's arguments split at the first `--`: Nx's own, and the overrides after it.
pub(super) fn split_overrides(args: &[String]) -> (&[String], &[String]) {
    match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], &args[i + 1..]),
        None => (args, &[]),
    }
}

/// The overrides a task gets: the command's, if the command names it.
pub(super) fn task_overrides<'a>(nx_args: &'a [String], task: &TaskSpec) -> &'a [String] {
    let (_, overrides) = split_overrides(nx_args);
    if !overrides.is_empty() && named_by_command(nx_args, task) {
        overrides
    } else {
        &[]
    }
}

/// Whether a task is one the command names (so it gets the overrides): a target of
/// `run-many`/`affected -t ...`, the task of `run project:target`, or `nx <target> [project]`.
pub(super) fn named_by_command(nx_args: &[String], task: &TaskSpec) -> bool {
    let (words, _) = split_overrides(nx_args);
    let Some(command) = words.first().filter(|w| !w.starts_with('-')) else {
        return false;
    };
    match command.as_str() {
        "run-many" | "affected" => targets(words).iter().any(|t| *t == task.target),
        "run" => words.get(1).is_some_and(|id| {
            task.id == *id
                || task
                    .id
                    .strip_prefix(id.as_str())
                    .is_some_and(|rest| rest.starts_with(':'))
        }),
        target => {
            task.target == target
                && words
                    .get(1)
                    .filter(|p| !p.starts_with('-'))
                    .is_none_or(|p| *p == task.project)
        }
    }
}

/// The targets of `-t a b`, `-t a,b`, `--targets=a,b`, `--target a`.
fn targets(words: &[String]) -> Vec<&str> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = words[i].as_str();
        let inline = ["--targets=", "--target=", "-t="]
            .iter()
            .find_map(|p| w.strip_prefix(p));
        if let Some(list) = inline {
            out.extend(list.split(',').filter(|t| !t.is_empty()));
        } else if matches!(w, "-t" | "--targets" | "--target") {
            while let Some(next) = words.get(i + 1).filter(|n| !n.starts_with('-')) {
                out.extend(next.split(',').filter(|t| !t.is_empty()));
                i += 1;
            }
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn task(id: &str, project: &str, target: &str) -> TaskSpec {
        let mut t = TaskSpec::new(id, "x");
        t.project = project.into();
        t.target = target.into();
        t
    }

    #[test]
    fn overrides_go_to_the_tasks_the_command_names() {
        let a = args(&[
            "run-many",
            "-t",
            "test",
            "test:lib",
            "--parallel=2",
            "--",
            "--coverage",
            "-u",
        ]);
        assert_eq!(split_overrides(&a).1, args(&["--coverage", "-u"]));
        assert!(named_by_command(&a, &task("lib:test", "lib", "test")));
        assert!(named_by_command(
            &a,
            &task("lib:test:lib", "lib", "test:lib")
        ));
        assert!(!named_by_command(&a, &task("lib:build", "lib", "build")));

        let a = args(&["affected", "--targets=lint,test", "--", "--fix"]);
        assert!(named_by_command(&a, &task("lib:lint", "lib", "lint")));
        assert!(!named_by_command(&a, &task("lib:build", "lib", "build")));

        let a = args(&["run", "app:test", "--", "--watch=false"]);
        assert!(named_by_command(&a, &task("app:test", "app", "test")));
        assert!(named_by_command(&a, &task("app:test:ci", "app", "test")));
        assert!(!named_by_command(
            &a,
            &task("app:test-e2e", "app", "test-e2e")
        ));
        assert!(!named_by_command(&a, &task("lib:build", "lib", "build")));

        let a = args(&["test", "app", "--", "--coverage"]);
        assert!(named_by_command(&a, &task("app:test", "app", "test")));
        assert!(!named_by_command(&a, &task("lib:test", "lib", "test")));
        assert_eq!(
            split_overrides(&args(&["run-many", "-t", "x"])).1,
            args(&[])
        );
    }
}
