//! Workspaces of a daemon agent: for each run, the run's repository at the run's commit,
//! after its launch template's init steps.
//!
//! Under `--workspaces-dir DIR`, each repository has `DIR/KEY/` holding a mirror clone
//! (`repo.git`, fetched for every new run, cloned only once) and worktrees `tree-N`. The agent
//! gives each run a tree of its own while its tasks run (tasks of one run share it, two runs
//! never do at once) and reuses trees between runs: checked out at the new commit and cleaned
//! (`git clean -ffdx`, keeping the paths of `--keep`, such as `node_modules`).
//!
//! The preparation runs inside the task's own process (`drover prepare-workspace ... --
//! COMMAND`), so its output is the task's output and the main job sees it, it is killed with
//! the task's process group, and the agent's loop never waits on git. The first task of a run
//! on a tree prepares it under a lock; the others find it ready (or find why it could not be
//! prepared, and fail at once with the same words).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use drover_scheduler::launch::{LaunchTemplates, StepKind};

/// How a daemon agent keeps workspaces.
#[derive(Clone, Debug)]
pub struct WorkspacesConfig {
    pub dir: PathBuf,
    /// Paths `git clean` leaves between runs (`node_modules`, caches).
    pub keep: Vec<String>,
    /// Launch templates for repositories that have none of their own (the agent's own file;
    /// the coordinator's comes after it).
    pub launch_templates: Option<PathBuf>,
    /// The `drover` binary, which prepares a workspace inside the task's process.
    pub exe: PathBuf,
}

/// The folder name of a repository: readable, and unique by a hash of the whole URL.
pub fn repo_key(url: &str) -> String {
    let tail: String = url
        .trim_end_matches('/')
        .trim_end_matches(".git")
        .rsplit(['/', ':'])
        .next()
        .unwrap_or("repo")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(40)
        .collect();
    // FNV-1a: stable across builds and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in url.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!(
        "{}-{:08x}",
        if tail.is_empty() { "repo" } else { &tail },
        h as u32
    )
}

/// Which tree each run's tasks use, in the agent process.
#[derive(Debug, Default)]
pub(crate) struct Trees {
    /// (repository key, tree number) -> (run, tasks running in it).
    in_use: HashMap<(String, u32), (String, usize)>,
    /// Trees that exist, per repository key, and the run each was last prepared for.
    known: HashMap<(String, u32), String>,
}

impl Trees {
    /// The tree a task of `run` of `repository` runs in.
    pub(crate) fn take(&mut self, repository: &str, run: &str) -> (String, u32) {
        let key = repo_key(repository);
        if let Some((k, _)) = self
            .in_use
            .iter_mut()
            .find(|((k, _), (r, _))| *k == key && r == run)
        {
            let k = k.clone();
            self.in_use.get_mut(&k).expect("found").1 += 1;
            return k;
        }
        // A free tree, the one last used by this run first, then the lowest.
        let free = |n: &u32| !self.in_use.contains_key(&(key.clone(), *n));
        let mut numbers: Vec<u32> = self
            .known
            .keys()
            .filter(|(k, _)| *k == key)
            .map(|(_, n)| *n)
            .filter(free)
            .collect();
        numbers.sort_by_key(|n| (self.known[&(key.clone(), *n)] != run, *n));
        let n = numbers.first().copied().unwrap_or_else(|| {
            (0..)
                .find(|n| !self.known.contains_key(&(key.clone(), *n)))
                .expect("a free number")
        });
        let tree = (key, n);
        self.known.insert(tree.clone(), run.to_string());
        self.in_use.insert(tree.clone(), (run.to_string(), 1));
        tree
    }

    /// A task in the tree ended.
    pub(crate) fn give_back(&mut self, tree: &(String, u32)) {
        if let Some((_, n)) = self.in_use.get_mut(tree) {
            *n -= 1;
            if *n == 0 {
                self.in_use.remove(tree);
            }
        }
    }
}

/// The repositories the agent holds workspaces of (from `DIR/*/url`).
pub fn repositories(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("url")).ok())
        .map(|u| u.trim().to_string())
        .filter(|u| !u.is_empty())
        .collect();
    out.sort();
    out
}

/// Where the coordinator's launch templates are kept for the preparations to read.
pub fn coordinator_templates_path(dir: &Path) -> PathBuf {
    dir.join(".coordinator-launch-templates.yaml")
}

/// What `drover prepare-workspace` is asked.
#[derive(Clone, Debug)]
pub struct Prepare {
    pub workspaces: PathBuf,
    pub repository: String,
    pub commit: String,
    pub run: String,
    pub tree: u32,
    pub launch_template: String,
    /// Launch templates for a repository without `.nx/workflows`, first found wins.
    pub fallbacks: Vec<PathBuf>,
    pub keep: Vec<String>,
}

/// A workspace ready for the run's tasks: where, and the variables its init steps left.
#[derive(Debug)]
pub struct Prepared {
    pub dir: PathBuf,
    pub env: BTreeMap<String, String>,
}

fn say(line: &str) {
    // One write: the line reaches the task's log in one piece.
    let _ = std::io::stderr().write_all(format!("drover: {line}\n").as_bytes());
}

fn git(dir: &Path, args: &[&str]) -> Result<(), String> {
    let status = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`git {}` failed ({status})", args.join(" ")))
    }
}

fn lock(path: &Path) -> Result<File, String> {
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.lock()
        .map_err(|e| format!("cannot lock {}: {e}", path.display()))?;
    Ok(f)
}

impl Prepare {
    /// Prepares the run's workspace (or finds it prepared) and returns it.
    pub fn run(&self) -> Result<Prepared, String> {
        let repo_dir = self.workspaces.join(repo_key(&self.repository));
        std::fs::create_dir_all(&repo_dir).map_err(|e| format!("{}: {e}", repo_dir.display()))?;
        let tree = repo_dir.join(format!("tree-{}", self.tree));
        let marker = repo_dir.join(format!("tree-{}.prepared", self.tree));
        let env_file = repo_dir.join(format!("tree-{}.env", self.tree));
        let _tree_lock = lock(&repo_dir.join(format!("tree-{}.lock", self.tree)))?;
        match std::fs::read_to_string(&marker) {
            Ok(m) if m.lines().next() == Some(&format!("{} ok", self.run)) => {
                return Ok(Prepared {
                    dir: tree,
                    env: read_env(&env_file),
                });
            }
            Ok(m) if m.lines().next() == Some(&format!("{} failed", self.run)) => {
                let why: String = m.lines().skip(1).collect::<Vec<_>>().join("\n");
                return Err(format!(
                    "the workspace for run {} could not be prepared: {why}",
                    self.run
                ));
            }
            _ => {}
        }
        let _ = std::fs::remove_file(&marker);
        match self.prepare(&repo_dir, &tree, &env_file) {
            Ok(()) => {
                std::fs::write(&marker, format!("{} ok\n", self.run))
                    .map_err(|e| format!("{}: {e}", marker.display()))?;
                Ok(Prepared {
                    dir: tree,
                    env: read_env(&env_file),
                })
            }
            Err(why) => {
                let _ = std::fs::write(&marker, format!("{} failed\n{why}\n", self.run));
                Err(why)
            }
        }
    }

    fn prepare(&self, repo_dir: &Path, tree: &Path, env_file: &Path) -> Result<(), String> {
        let mirror = repo_dir.join("repo.git");
        {
            let _repo_lock = lock(&repo_dir.join("repo.lock"))?;
            if mirror.join("HEAD").exists() {
                say(&format!(
                    "fetching {} (the workspace is reused)",
                    self.repository
                ));
                git(&mirror, &["remote", "update", "--prune"])?;
            } else {
                say(&format!(
                    "cloning {} into {}",
                    self.repository,
                    repo_dir.display()
                ));
                let status = Command::new("git")
                    .args(["clone", "--mirror", "--quiet", &self.repository])
                    .arg(&mirror)
                    .stdin(Stdio::null())
                    .status()
                    .map_err(|e| format!("cannot run git: {e}"))?;
                if !status.success() {
                    return Err(format!("cloning {} failed ({status})", self.repository));
                }
                std::fs::write(repo_dir.join("url"), format!("{}\n", self.repository))
                    .map_err(|e| e.to_string())?;
            }
            let known = Command::new("git")
                .arg("-C")
                .arg(&mirror)
                .args(["cat-file", "-e", &format!("{}^{{commit}}", self.commit)])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !known {
                // Not on a branch or tag: ask for the commit itself.
                git(&mirror, &["fetch", "--quiet", "origin", &self.commit])?;
            }
            if !tree.join(".git").exists() {
                // A tree whose worktree add was cut short: start it again.
                let _ = std::fs::remove_dir_all(tree);
                let t = tree.to_string_lossy().into_owned();
                git(&mirror, &["worktree", "prune"])?;
                git(
                    &mirror,
                    &[
                        "worktree",
                        "add",
                        "--quiet",
                        "--detach",
                        "--force",
                        &t,
                        &self.commit,
                    ],
                )?;
            }
        }
        say(&format!(
            "checking out {} for run {}",
            short(&self.commit),
            self.run
        ));
        git(
            tree,
            &["checkout", "--quiet", "--force", "--detach", &self.commit],
        )?;
        let mut clean = vec!["clean", "-ffdx", "--quiet"];
        for k in &self.keep {
            clean.push("-e");
            clean.push(k);
        }
        git(tree, &clean)?;
        std::fs::write(env_file, "").map_err(|e| format!("{}: {e}", env_file.display()))?;
        self.init_steps(tree, env_file)
    }

    /// The launch template's init steps, in the workspace, each seeing what earlier ones
    /// appended to the env file (`NX_CLOUD_ENV`, `DROVER_ENV`).
    fn init_steps(&self, tree: &Path, env_file: &Path) -> Result<(), String> {
        let (source, templates) = self.templates(tree)?;
        let Some(template) = templates.get(&self.launch_template) else {
            if let Some(source) = source {
                say(&format!(
                    "{source} has no launch template `{}`: no init steps",
                    self.launch_template
                ));
            }
            return Ok(());
        };
        let source = source.unwrap_or_default();
        for step in &template.init_steps {
            let script = match &step.kind {
                StepKind::Checkout => {
                    say(&format!(
                        "init step `{}`: the workspace is checked out",
                        step.name
                    ));
                    continue;
                }
                StepKind::InstallNodeModules => install_command(tree),
                StepKind::Script(s) => s.clone(),
                StepKind::Unsupported(uses) => {
                    return Err(format!(
                        "init step `{}` of launch template `{}` ({source}) uses `{uses}`, an Nx Cloud hosted step Drover cannot run; write it as a `script`",
                        step.name, self.launch_template
                    ));
                }
            };
            say(&format!("init step `{}`", step.name));
            let status = Command::new("sh")
                .arg("-c")
                .arg(&script)
                .current_dir(tree)
                .envs(&template.env)
                .envs(read_env(env_file))
                .envs(&step.env)
                .env("NX_CLOUD_ENV", env_file)
                .env("DROVER_ENV", env_file)
                .stdin(Stdio::null())
                .status()
                .map_err(|e| format!("init step `{}`: cannot run sh: {e}", step.name))?;
            if !status.success() {
                return Err(format!(
                    "init step `{}` of launch template `{}` failed ({status})",
                    step.name, self.launch_template
                ));
            }
        }
        // The template's own variables reach the tasks too.
        let mut f = File::options()
            .append(true)
            .open(env_file)
            .map_err(|e| format!("{}: {e}", env_file.display()))?;
        for (k, v) in &template.env {
            let _ = writeln!(f, "{k}={v}");
        }
        Ok(())
    }

    /// The repository's `.nx/workflows/*.yaml` at the commit, else the fallbacks.
    fn templates(&self, tree: &Path) -> Result<(Option<String>, LaunchTemplates), String> {
        let dir = tree.join(".nx/workflows");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|e| {
                e.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        let mut found = LaunchTemplates::default();
        for f in &files {
            let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
            let shown = format!(
                ".nx/workflows/{}",
                f.file_name().unwrap_or_default().to_string_lossy()
            );
            found.merge(LaunchTemplates::parse(&shown, &text)?, &shown)?;
        }
        if !found.templates.is_empty() {
            return Ok((Some(".nx/workflows".into()), found));
        }
        for f in &self.fallbacks {
            let Ok(text) = std::fs::read_to_string(f) else {
                continue;
            };
            let shown = f.display().to_string();
            let t = LaunchTemplates::parse(&shown, &text)?;
            if !t.templates.is_empty() {
                return Ok((Some(shown), t));
            }
        }
        Ok((None, found))
    }
}

/// Nx Cloud's install step: the package manager of the lockfile in the workspace.
fn install_command(tree: &Path) -> String {
    if tree.join("pnpm-lock.yaml").exists() {
        "pnpm install --frozen-lockfile".into()
    } else if tree.join("yarn.lock").exists() {
        "yarn install --frozen-lockfile".into()
    } else if tree.join("bun.lockb").exists() || tree.join("bun.lock").exists() {
        "bun install --frozen-lockfile".into()
    } else {
        "npm ci".into()
    }
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

/// `KEY=VALUE` lines of an env file (others are left out).
pub fn read_env(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| !k.trim().is_empty())
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_folders_are_readable_and_unique() {
        let a = repo_key("https://github.com/acme/web.git");
        let b = repo_key("git@github.com:other/web.git");
        assert!(a.starts_with("web-") && b.starts_with("web-"), "{a} {b}");
        assert_ne!(a, b);
        assert_eq!(a, repo_key("https://github.com/acme/web.git"));
        assert!(repo_key("/tmp/x y/repo").starts_with("repo-"));
    }

    #[test]
    fn a_run_keeps_its_tree_and_two_runs_never_share_one() {
        let mut t = Trees::default();
        let a1 = t.take("u", "run-a");
        let a2 = t.take("u", "run-a");
        let b = t.take("u", "run-b");
        assert_eq!(a1, a2);
        assert_ne!(a1, b);
        t.give_back(&a1);
        t.give_back(&a2);
        // The free tree goes to the next run; run-b still holds its own.
        let c = t.take("u", "run-c");
        assert_eq!(c, a1);
        assert_ne!(t.take("u", "run-d"), b);
    }

    #[test]
    fn env_files_hold_key_value_lines() {
        let p = std::env::temp_dir().join(format!("drover-env-{}", std::process::id()));
        std::fs::write(&p, "A=1\nnot a pair\nB=two words=yes\n").unwrap();
        let env = read_env(&p);
        assert_eq!(env["A"], "1");
        assert_eq!(env["B"], "two words=yes");
        assert_eq!(env.len(), 2);
        let _ = std::fs::remove_file(p);
    }
}
