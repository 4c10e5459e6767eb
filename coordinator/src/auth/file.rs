//! The auth file (`--auth-file`): which tokens exist, by the SHA-256 of their bytes, and what
//! each may do. It holds hashes, never tokens.
//!
//! ```yaml
//! tokens:
//!   - name: ci-main-job
//!     sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//!     scopes: [read, write]
//!   - name: linux-agents
//!     sha256: ...
//!     scopes: [agent]
//!     launch-templates: [linux-medium, linux-large]
//!   - name: pull-requests
//!     sha256: ...
//!     scopes: [read, write]
//!     cache-namespace: pr
//! ```

use std::collections::BTreeSet;
use std::fmt;

use serde::Deserialize;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Watch and get runs, read the cache, `/metrics`, the UI.
    Read,
    /// Start, submit to and complete runs; write the cache.
    Write,
    /// Connect as an agent.
    Agent,
    /// The admin API.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Read, Scope::Write, Scope::Agent, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Agent => "agent",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of the file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TokenEntry {
    pub name: String,
    /// Lowercase hex SHA-256 of the token's bytes.
    pub sha256: String,
    pub scopes: Vec<Scope>,
    /// An `agent` token may connect only as these launch templates (absent: any).
    #[serde(default)]
    pub launch_templates: Option<Vec<String>>,
    /// Runs started with this token write the cache into this namespace (and read it, then
    /// the default one). Absent: the trusted default namespace.
    #[serde(default)]
    pub cache_namespace: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    tokens: Vec<TokenEntry>,
}

/// The entries of a valid file.
#[derive(Clone, Debug, Default)]
pub struct AuthFile {
    pub tokens: Vec<TokenEntry>,
}

/// Whether a cache namespace name is usable: letters, digits, `-` and `_`, at most 64.
pub fn valid_namespace(ns: &str) -> bool {
    !ns.is_empty()
        && ns.len() <= 64
        && ns
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl AuthFile {
    /// Parses the file; every error names the file, and the line and column where it can.
    pub fn parse(path: &str, text: &str) -> Result<AuthFile, String> {
        let raw: RawFile = serde_saphyr::from_str(text).map_err(|e| {
            let (line, col) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((1, 1));
            let message = e.to_string();
            let message = message.lines().next().unwrap_or_default();
            format!("{path}:{line}:{col}: {message}")
        })?;
        let mut names = BTreeSet::new();
        let mut hashes = BTreeSet::new();
        for (i, t) in raw.tokens.iter().enumerate() {
            let at = format!("{path}: token {} (`{}`)", i + 1, t.name);
            if t.name.trim().is_empty() {
                return Err(format!("{path}: token {}: `name` is empty", i + 1));
            }
            if !names.insert(t.name.as_str()) {
                return Err(format!("{at}: the name is used twice"));
            }
            let hex_ok = t.sha256.len() == 64
                && t.sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !hex_ok {
                return Err(format!(
                    "{at}: `sha256` must be 64 lowercase hex digits (the SHA-256 of the token; `drover token new` prints one)"
                ));
            }
            if !hashes.insert(t.sha256.as_str()) {
                return Err(format!("{at}: the same token hash is listed twice"));
            }
            if t.scopes.is_empty() {
                return Err(format!(
                    "{at}: `scopes` is empty (read, write, agent, admin)"
                ));
            }
            if let Some(ns) = &t.cache_namespace
                && !valid_namespace(ns)
            {
                return Err(format!(
                    "{at}: cache namespace `{ns}` must be letters, digits, `-` or `_` (at most 64)"
                ));
            }
            if t.launch_templates.is_some() && !t.scopes.contains(&Scope::Agent) {
                return Err(format!(
                    "{at}: `launch-templates` limits an agent token, but the token has no `agent` scope"
                ));
            }
        }
        Ok(AuthFile { tokens: raw.tokens })
    }

    /// The entry for one line of YAML, as `drover token new` prints it.
    pub fn entry_yaml(entry: &TokenEntry) -> String {
        let scopes: Vec<&str> = entry.scopes.iter().map(|s| s.as_str()).collect();
        let mut out = format!(
            "  - name: {}\n    sha256: {}\n    scopes: [{}]\n",
            entry.name,
            entry.sha256,
            scopes.join(", ")
        );
        if let Some(t) = &entry.launch_templates {
            out.push_str(&format!("    launch-templates: [{}]\n", t.join(", ")));
        }
        if let Some(ns) = &entry.cache_namespace {
            out.push_str(&format!("    cache-namespace: {ns}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn a_valid_file_parses_and_prints_back() {
        let text = format!(
            "tokens:\n  - name: agents\n    sha256: {HASH}\n    scopes: [agent]\n    launch-templates: [linux]\n"
        );
        let file = AuthFile::parse("auth.yaml", &text).unwrap();
        assert_eq!(file.tokens[0].scopes, [Scope::Agent]);
        assert_eq!(
            format!("tokens:\n{}", AuthFile::entry_yaml(&file.tokens[0])),
            text
        );
    }

    #[test]
    fn mistakes_name_the_place() {
        let err = |text: &str| AuthFile::parse("auth.yaml", text).unwrap_err();
        let e = err(&format!(
            "tokens:\n  - name: a\n    sha256: {HASH}\n    scopes: [read]\n    scope: [write]\n"
        ));
        assert!(e.starts_with("auth.yaml:5:"), "{e}");
        let e = err(&format!(
            "tokens:\n  - name: a\n    sha256: {HASH}\n    scopes: [root]\n"
        ));
        assert!(e.starts_with("auth.yaml:4:"), "{e}");
        let e = err("tokens:\n  - name: a\n    sha256: ABC\n    scopes: [read]\n");
        assert!(
            e.contains("token 1 (`a`)") && e.contains("64 lowercase hex"),
            "{e}"
        );
        let e = err(&format!(
            "tokens:\n  - {{name: a, sha256: {HASH}, scopes: [read]}}\n  - {{name: a, sha256: {}, scopes: [read]}}\n",
            "0".repeat(64)
        ));
        assert!(e.contains("used twice"), "{e}");
        let e = err(&format!(
            "tokens:\n  - {{name: a, sha256: {HASH}, scopes: [read], launch-templates: [x]}}\n"
        ));
        assert!(e.contains("no `agent` scope"), "{e}");
        let e = err(&format!(
            "tokens:\n  - {{name: a, sha256: {HASH}, scopes: [write], cache-namespace: 'a/b'}}\n"
        ));
        assert!(e.contains("cache namespace `a/b`"), "{e}");
    }
}
