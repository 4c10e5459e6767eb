//! Launch templates in Nx's format (`.nx/workflows/*.yaml`, key `launch-templates`): what a
//! daemon agent does to a fresh workspace before it runs a run's tasks.
//!
//! ```yaml
//! launch-templates:
//!   linux-medium:
//!     resource-class: 'docker_linux_amd64/medium'   # Nx Cloud's; Drover ignores it
//!     env:
//!       NODE_OPTIONS: --max-old-space-size=4096
//!     init-steps:
//!       - name: Checkout
//!         uses: 'nrwl/nx-cloud-workflows/v5/workflow-steps/checkout/main.yaml'
//!       - name: Install node modules
//!         uses: 'nrwl/nx-cloud-workflows/v5/workflow-steps/install-node-modules/main.yaml'
//!       - name: Build tools
//!         script: |
//!           echo "TOOLS=$PWD/tools" >> $NX_CLOUD_ENV
//!         env:
//!           CI: 'true'
//! ```
//!
//! Of Nx Cloud's hosted steps (`uses:`), `checkout` is what the agent's workspace preparation
//! does anyway, and `install-node-modules` becomes the install command of the lockfile found;
//! any other is reported by name, not ignored.

use std::collections::BTreeMap;

use serde::Deserialize;

/// A value of an `env` map: YAML may type it as a number or a boolean.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Scalar {
    fn text(self) -> String {
        match self {
            Scalar::Text(s) => s,
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Bool(b) => b.to_string(),
        }
    }
}

fn env_map(raw: BTreeMap<String, Scalar>) -> BTreeMap<String, String> {
    raw.into_iter().map(|(k, v)| (k, v.text())).collect()
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawStep {
    name: Option<String>,
    script: Option<String>,
    uses: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, Scalar>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawTemplate {
    #[serde(default)]
    env: BTreeMap<String, Scalar>,
    #[serde(default)]
    init_steps: Vec<RawStep>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawFile {
    #[serde(default)]
    launch_templates: BTreeMap<String, RawTemplate>,
}

/// What one init step does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepKind {
    /// A shell script, run with `sh -c` in the workspace.
    Script(String),
    /// Nx Cloud's checkout step: the workspace preparation has done it.
    Checkout,
    /// Nx Cloud's install step: install with the package manager of the lockfile found.
    InstallNodeModules,
    /// A hosted step Drover cannot run; preparing fails, naming it.
    Unsupported(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub name: String,
    pub kind: StepKind,
    pub env: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LaunchTemplate {
    pub env: BTreeMap<String, String>,
    pub init_steps: Vec<Step>,
}

/// Launch templates by name, from one or more files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LaunchTemplates {
    pub templates: BTreeMap<String, LaunchTemplate>,
}

impl LaunchTemplates {
    /// Parses one file. A file of `.nx/workflows` without `launch-templates` (the assignment
    /// rules, say) has none. Errors name the file, line and column.
    pub fn parse(path: &str, text: &str) -> Result<LaunchTemplates, String> {
        if text.trim().is_empty() {
            return Ok(LaunchTemplates::default());
        }
        let raw: RawFile = serde_saphyr::from_str(text).map_err(|e| {
            let (line, col) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((1, 1));
            let msg = e.to_string();
            format!(
                "{path}:{line}:{col}: {}",
                msg.lines().next().unwrap_or_default()
            )
        })?;
        let mut out = LaunchTemplates::default();
        for (name, t) in raw.launch_templates {
            let mut steps = Vec::new();
            for (i, s) in t.init_steps.into_iter().enumerate() {
                let step_name = s.name.clone().unwrap_or_else(|| format!("step {}", i + 1));
                let kind = match (s.script, s.uses) {
                    (Some(script), None) => StepKind::Script(script),
                    (None, Some(uses)) => hosted(&uses),
                    (Some(_), Some(_)) => {
                        return Err(format!(
                            "{path}: launch template `{name}`, init step `{step_name}`: give `script` or `uses`, not both"
                        ));
                    }
                    (None, None) => {
                        return Err(format!(
                            "{path}: launch template `{name}`, init step `{step_name}`: it has neither `script` nor `uses`"
                        ));
                    }
                };
                steps.push(Step {
                    name: step_name,
                    kind,
                    env: env_map(s.env),
                });
            }
            out.templates.insert(
                name,
                LaunchTemplate {
                    env: env_map(t.env),
                    init_steps: steps,
                },
            );
        }
        Ok(out)
    }

    /// Adds another file's templates; a name both define is an error naming both files.
    pub fn merge(&mut self, other: LaunchTemplates, path: &str) -> Result<(), String> {
        for (name, t) in other.templates {
            if self.templates.contains_key(&name) {
                return Err(format!(
                    "{path}: launch template `{name}` is defined in another file of .nx/workflows too"
                ));
            }
            self.templates.insert(name, t);
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&LaunchTemplate> {
        self.templates.get(name)
    }
}

/// What a hosted step (`uses:`) becomes.
fn hosted(uses: &str) -> StepKind {
    let step = uses
        .split("workflow-steps/")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default();
    match step {
        "checkout" => StepKind::Checkout,
        "install-node-modules" => StepKind::InstallNodeModules,
        _ => StepKind::Unsupported(uses.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NX: &str = "launch-templates:
  linux-medium:
    resource-class: 'docker_linux_amd64/medium'
    image: 'ubuntu22.04-node20.11-v9'
    env:
      CI: true
      WORKERS: 4
    init-steps:
      - name: Checkout
        uses: 'nrwl/nx-cloud-workflows/v5/workflow-steps/checkout/main.yaml'
      - name: Install
        uses: 'nrwl/nx-cloud-workflows/v5/workflow-steps/install-node-modules/main.yaml'
      - name: Browsers
        uses: 'nrwl/nx-cloud-workflows/v5/workflow-steps/install-browsers/main.yaml'
      - name: Tools
        script: |
          echo TOOLS=1 >> $NX_CLOUD_ENV
        env:
          LEVEL: 2
";

    #[test]
    fn nx_templates_parse_with_hosted_steps_known_or_named() {
        let t = LaunchTemplates::parse("w.yaml", NX).unwrap();
        let m = t.get("linux-medium").unwrap();
        assert_eq!(m.env["CI"], "true");
        assert_eq!(m.env["WORKERS"], "4");
        let kinds: Vec<&StepKind> = m.init_steps.iter().map(|s| &s.kind).collect();
        assert_eq!(kinds[0], &StepKind::Checkout);
        assert_eq!(kinds[1], &StepKind::InstallNodeModules);
        assert!(matches!(kinds[2], StepKind::Unsupported(u) if u.contains("install-browsers")));
        assert!(matches!(kinds[3], StepKind::Script(s) if s.contains("NX_CLOUD_ENV")));
        assert_eq!(m.init_steps[3].env["LEVEL"], "2");
    }

    #[test]
    fn other_files_of_the_folder_hold_none_and_mistakes_name_the_place() {
        let rules = "assignment-rules:\n  - targets: [build]\n    run-on: [{agent: linux}]\n";
        assert!(
            LaunchTemplates::parse("rules.yaml", rules)
                .unwrap()
                .templates
                .is_empty()
        );
        let e = LaunchTemplates::parse(
            "w.yaml",
            "launch-templates:\n  a:\n    init-steps:\n      - name: x\n",
        )
        .unwrap_err();
        assert!(e.contains("`x`") && e.contains("neither"), "{e}");
        let e = LaunchTemplates::parse("w.yaml", "launch-templates: [\n").unwrap_err();
        assert!(e.starts_with("w.yaml:"), "{e}");
        let mut a = LaunchTemplates::parse("a.yaml", "launch-templates:\n  t: {}\n").unwrap();
        let b = LaunchTemplates::parse("b.yaml", "launch-templates:\n  t: {}\n").unwrap();
        assert!(a.merge(b, "b.yaml").unwrap_err().contains("`t`"));
    }
}
