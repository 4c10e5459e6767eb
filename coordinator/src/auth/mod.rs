//! Who may do what: bearer tokens from the auth file (`--auth-file`, SHA-256 hashes with
//! scopes), per-lease credentials for tasks, and the cache's own legacy tokens. With no auth
//! file and no cache token the coordinator is open, which it only allows on loopback
//! addresses (see [`check_exposure`]).
//!
//! Every refusal is logged with the token's name (never the token) and the peer address;
//! an unknown or missing token is UNAUTHENTICATED (HTTP 401), a token without the scope is
//! PERMISSION_DENIED (HTTP 403) with a message that names the scope needed.

mod file;
mod lease;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};

pub use file::{AuthFile, Scope, TokenEntry, valid_namespace};
pub use lease::{LeaseAccess, LeaseCredentials, hex};

use crate::error::CoordError;

/// Who a request comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The token's name in the auth file (`anonymous` when the coordinator is open).
    pub name: String,
    scopes: BTreeSet<Scope>,
    /// An `agent` token may connect only as these launch templates.
    pub launch_templates: Option<Vec<String>>,
    /// The cache namespace the token's runs write to (`None`: the default one).
    pub cache_namespace: Option<String>,
    /// Set for a lease credential: cache access for that lease's run, nothing else.
    pub lease: Option<LeaseAccess>,
}

impl Principal {
    fn anonymous() -> Principal {
        Principal {
            name: "anonymous".into(),
            scopes: Scope::ALL.into_iter().collect(),
            launch_templates: None,
            cache_namespace: None,
            lease: None,
        }
    }

    fn of(entry: &TokenEntry) -> Principal {
        Principal {
            name: entry.name.clone(),
            scopes: entry.scopes.iter().copied().collect(),
            launch_templates: entry.launch_templates.clone(),
            cache_namespace: entry.cache_namespace.clone(),
            lease: None,
        }
    }

    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    /// Whether this agent token may connect as `template`.
    pub fn may_be(&self, template: &str) -> bool {
        self.launch_templates
            .as_ref()
            .is_none_or(|ts| ts.iter().any(|t| t == template))
    }
}

/// Why a request was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denied {
    /// No `authorization: Bearer TOKEN`, or a token no one issued.
    Unauthenticated(&'static str),
    /// A known token without the scope needed.
    Scope { name: String, needed: Scope },
    /// An agent token limited to other launch templates.
    Template { name: String, template: String },
}

impl Denied {
    pub fn message(&self) -> String {
        match self {
            Denied::Unauthenticated(why) => format!(
                "{why}: send `authorization: Bearer TOKEN` (--token or DROVER_TOKEN); tokens are listed in the coordinator's --auth-file"
            ),
            Denied::Scope { name, needed } => {
                format!("token `{name}` lacks the `{needed}` scope this needs")
            }
            Denied::Template { name, template } => format!(
                "token `{name}` may not connect as launch template `{template}` (see its launch-templates in the auth file)"
            ),
        }
    }

    pub fn status(&self) -> tonic::Status {
        match self {
            Denied::Unauthenticated(_) => tonic::Status::unauthenticated(self.message()),
            _ => tonic::Status::permission_denied(self.message()),
        }
    }

    pub fn http_status(&self) -> axum::http::StatusCode {
        match self {
            Denied::Unauthenticated(_) => axum::http::StatusCode::UNAUTHORIZED,
            _ => axum::http::StatusCode::FORBIDDEN,
        }
    }

    /// The token's name, for the audit log.
    fn who(&self) -> &str {
        match self {
            Denied::Unauthenticated(_) => "-",
            Denied::Scope { name, .. } | Denied::Template { name, .. } => name,
        }
    }
}

/// The tokens of the auth file, by hash.
struct Tokens {
    entries: Vec<TokenEntry>,
}

impl Tokens {
    /// The entry whose hash is the presented token's, comparing every hash in constant time.
    fn find(&self, presented: &str) -> Option<&TokenEntry> {
        let digest = hex(&Sha256::digest(presented.as_bytes()));
        let mut found = None;
        for e in &self.entries {
            if constant_time_eq(e.sha256.as_bytes(), digest.as_bytes()) {
                found = Some(e);
            }
        }
        found
    }
}

/// The cache's own tokens (`--cache-token`, `--cache-read-token`): cache access only.
#[derive(Clone, Debug, Default)]
pub struct CacheTokens {
    pub write: Option<String>,
    pub read: Option<String>,
}

pub struct Auth {
    path: Option<PathBuf>,
    tokens: RwLock<Option<Arc<Tokens>>>,
    cache_tokens: CacheTokens,
    pub leases: LeaseCredentials,
}

impl Auth {
    /// Reads the auth file (if any) and the lease-credential key of the data dir.
    pub fn open(
        path: Option<&Path>,
        cache_tokens: CacheTokens,
        data_dir: &Path,
    ) -> Result<Auth, CoordError> {
        let auth = Auth {
            path: path.map(Path::to_path_buf),
            tokens: RwLock::new(None),
            cache_tokens,
            leases: LeaseCredentials::open(data_dir)?,
        };
        if auth.path.is_some() {
            auth.reload().map_err(CoordError::Auth)?;
        }
        Ok(auth)
    }

    /// Reads the auth file again (SIGHUP). Connections stay; new requests see the new tokens.
    /// A file that does not parse leaves the old tokens in place. Returns how many tokens
    /// there are now.
    pub fn reload(&self) -> Result<usize, String> {
        let Some(path) = &self.path else {
            return Ok(0);
        };
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
        let file = AuthFile::parse(&shown, &text)?;
        let n = file.tokens.len();
        *self.tokens.write().expect("not poisoned") = Some(Arc::new(Tokens {
            entries: file.tokens,
        }));
        Ok(n)
    }

    /// Whether requests need tokens (an auth file is configured).
    pub fn enabled(&self) -> bool {
        self.path.is_some()
    }

    fn tokens(&self) -> Option<Arc<Tokens>> {
        self.tokens.read().expect("not poisoned").clone()
    }

    /// Who an `authorization` header speaks for, with the auth file's tokens.
    pub fn principal(&self, authorization: Option<&str>) -> Result<Principal, Denied> {
        let Some(tokens) = self.tokens() else {
            return Ok(Principal::anonymous());
        };
        let presented = bearer(authorization)?;
        tokens
            .find(presented)
            .map(Principal::of)
            .ok_or(Denied::Unauthenticated("unknown token"))
    }

    /// [`principal`](Self::principal) with the scope a request needs.
    pub fn require(&self, authorization: Option<&str>, scope: Scope) -> Result<Principal, Denied> {
        let p = self.principal(authorization)?;
        if p.has(scope) {
            Ok(p)
        } else {
            Err(Denied::Scope {
                name: p.name,
                needed: scope,
            })
        }
    }

    /// Who may use the cache: a lease credential, the cache's own tokens, or an auth-file
    /// token. Open only when none of them is configured.
    pub fn cache_principal(
        &self,
        authorization: Option<&str>,
        scope: Scope,
    ) -> Result<Principal, Denied> {
        let has_cache_tokens =
            self.cache_tokens.write.is_some() || self.cache_tokens.read.is_some();
        if !self.enabled() && !has_cache_tokens {
            return Ok(Principal::anonymous());
        }
        let presented = bearer(authorization)?;
        if let Some(access) = self.leases.verify(presented) {
            return Ok(Principal {
                name: format!("lease {} of {}", access.lease, access.run_id),
                scopes: [Scope::Read, Scope::Write].into_iter().collect(),
                launch_templates: None,
                cache_namespace: access.cache_namespace.clone(),
                lease: Some(access),
            });
        }
        if let Some((run_id, cache_namespace)) = self.leases.verify_read(presented) {
            let p = Principal {
                name: format!("read credential of run {run_id}"),
                scopes: [Scope::Read].into_iter().collect(),
                launch_templates: None,
                cache_namespace,
                lease: None,
            };
            return if p.has(scope) {
                Ok(p)
            } else {
                Err(Denied::Scope {
                    name: p.name,
                    needed: scope,
                })
            };
        }
        if LeaseCredentials::looks_like(presented) {
            return Err(Denied::Unauthenticated(
                "the lease of this credential has ended",
            ));
        }
        let legacy = |token: &Option<String>| {
            token
                .as_deref()
                .is_some_and(|t| constant_time_eq(t.as_bytes(), presented.as_bytes()))
        };
        let cache_only = |name: &str, scopes: &[Scope]| Principal {
            name: name.into(),
            scopes: scopes.iter().copied().collect(),
            launch_templates: None,
            cache_namespace: None,
            lease: None,
        };
        let p = if legacy(&self.cache_tokens.write) {
            cache_only("cache-token", &[Scope::Read, Scope::Write])
        } else if legacy(&self.cache_tokens.read) {
            cache_only("cache-read-token", &[Scope::Read])
        } else {
            match self.tokens() {
                Some(tokens) => tokens
                    .find(presented)
                    .map(Principal::of)
                    .ok_or(Denied::Unauthenticated("unknown token"))?,
                None => return Err(Denied::Unauthenticated("unknown token")),
            }
        };
        if p.has(scope) {
            Ok(p)
        } else {
            Err(Denied::Scope {
                name: p.name,
                needed: scope,
            })
        }
    }

    /// For a gRPC request: the caller, if it has the scope; a refusal is logged with the
    /// token's name and the peer address.
    pub fn grpc<T>(
        &self,
        request: &tonic::Request<T>,
        scope: Scope,
        what: &str,
    ) -> Result<Principal, tonic::Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        self.require(header, scope).map_err(|denied| {
            audit_refusal(&denied, request.remote_addr(), what);
            denied.status()
        })
    }
}

/// Logs a refused request: who (the token's name, never the token), from where, for what.
pub fn audit_refusal(denied: &Denied, peer: Option<SocketAddr>, what: &str) {
    let peer = peer.map_or("-".to_string(), |p| p.to_string());
    tracing::warn!(token = %denied.who(), %peer, request = %what, reason = %denied.message(), "request refused");
}

/// The token of an `authorization: Bearer TOKEN` header.
fn bearer(authorization: Option<&str>) -> Result<&str, Denied> {
    let header = authorization
        .ok_or(Denied::Unauthenticated("no token"))?
        .trim();
    let (scheme, value) = header
        .split_once(' ')
        .ok_or(Denied::Unauthenticated("not a bearer token"))?;
    if !scheme.eq_ignore_ascii_case("bearer") || value.trim().is_empty() {
        return Err(Denied::Unauthenticated("not a bearer token"));
    }
    Ok(value.trim())
}

/// Compares without stopping at the first differing byte.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(*x ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

/// A new random token (256 bits) and its auth-file entry.
pub fn new_token(
    name: &str,
    scopes: Vec<Scope>,
    launch_templates: Option<Vec<String>>,
    cache_namespace: Option<String>,
) -> Result<(String, TokenEntry), String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness: {e}"))?;
    let token = format!("drover_{}", hex(&bytes));
    let entry = TokenEntry {
        name: name.to_string(),
        sha256: hex(&Sha256::digest(token.as_bytes())),
        scopes,
        launch_templates,
        cache_namespace,
    };
    Ok((token, entry))
}

/// Secure by default: without an auth file the coordinator listens on loopback addresses
/// only, unless told `--insecure-no-auth`.
pub fn check_exposure(
    listens: &[SocketAddr],
    auth_file: bool,
    insecure_no_auth: bool,
) -> Result<(), String> {
    if auth_file || insecure_no_auth {
        return Ok(());
    }
    match listens.iter().find(|a| !a.ip().is_loopback()) {
        None => Ok(()),
        Some(addr) => Err(format!(
            "refusing to listen on {addr} without tokens: anyone who reaches it could run code on the agents. \
             Make tokens with `drover token new --name NAME --scopes read,write` (and agent, admin), \
             list them in a file given as --auth-file (DROVER_AUTH_FILE), \
             or pass --insecure-no-auth on a network you trust"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth_with(entries: &[(&str, &[Scope])]) -> (Auth, Vec<String>) {
        let mut tokens = Vec::new();
        let mut list = Vec::new();
        for (name, scopes) in entries {
            let (t, e) = new_token(name, scopes.to_vec(), None, None).unwrap();
            tokens.push(t);
            list.push(e);
        }
        let auth = Auth {
            path: Some("auth.yaml".into()),
            tokens: RwLock::new(Some(Arc::new(Tokens { entries: list }))),
            cache_tokens: CacheTokens::default(),
            leases: LeaseCredentials::ephemeral(),
        };
        (auth, tokens)
    }

    #[test]
    fn tokens_grant_their_scopes_and_nothing_else() {
        let (auth, t) = auth_with(&[
            ("ci", &[Scope::Read, Scope::Write]),
            ("ops", &[Scope::Admin]),
        ]);
        let h = |t: &str| format!("Bearer {t}");
        assert_eq!(
            auth.require(Some(&h(&t[0])), Scope::Write).unwrap().name,
            "ci"
        );
        assert_eq!(
            auth.require(Some(&h(&t[0])), Scope::Admin),
            Err(Denied::Scope {
                name: "ci".into(),
                needed: Scope::Admin
            })
        );
        assert!(auth.require(Some(&h(&t[1])), Scope::Admin).is_ok());
        assert!(matches!(
            auth.require(None, Scope::Read),
            Err(Denied::Unauthenticated(_))
        ));
        assert!(matches!(
            auth.require(Some("Bearer nope"), Scope::Read),
            Err(Denied::Unauthenticated(_))
        ));
        assert!(matches!(
            auth.require(Some(&format!("Basic {}", t[0])), Scope::Read),
            Err(Denied::Unauthenticated(_))
        ));
        let denied = auth.require(Some(&h(&t[0])), Scope::Admin).unwrap_err();
        assert!(denied.message().contains("`admin`"), "{}", denied.message());
        assert!(
            !denied.message().contains(&t[0]),
            "a message never holds the token"
        );
    }

    #[test]
    fn without_an_auth_file_everything_is_open() {
        let dir = std::env::temp_dir().join(format!("drover-auth-{}", std::process::id()));
        let auth = Auth::open(None, CacheTokens::default(), &dir).unwrap();
        assert_eq!(auth.require(None, Scope::Admin).unwrap().name, "anonymous");
        assert!(auth.cache_principal(None, Scope::Write).is_ok());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn listening_beyond_loopback_needs_tokens_or_the_insecure_flag() {
        let lo: SocketAddr = "127.0.0.1:50051".parse().unwrap();
        let lo6: SocketAddr = "[::1]:50052".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:50051".parse().unwrap();
        assert!(check_exposure(&[lo, lo6], false, false).is_ok());
        let e = check_exposure(&[lo, any], false, false).unwrap_err();
        assert!(
            e.contains("0.0.0.0:50051")
                && e.contains("drover token new")
                && e.contains("--insecure-no-auth"),
            "{e}"
        );
        assert!(check_exposure(&[any], true, false).is_ok());
        assert!(check_exposure(&[any], false, true).is_ok());
    }

    #[test]
    fn the_cache_takes_lease_credentials_until_the_lease_ends() {
        let (auth, t) = auth_with(&[("reader", &[Scope::Read])]);
        let cred = auth.leases.issue(
            5,
            LeaseAccess {
                lease: drover_scheduler::state::LeaseId(1),
                run_id: "r".into(),
                cache_namespace: Some("pr".into()),
            },
        );
        let p = auth
            .cache_principal(Some(&format!("Bearer {cred}")), Scope::Write)
            .unwrap();
        assert_eq!(p.cache_namespace.as_deref(), Some("pr"));
        assert!(matches!(
            auth.cache_principal(Some(&format!("Bearer {}", t[0])), Scope::Write),
            Err(Denied::Scope {
                needed: Scope::Write,
                ..
            })
        ));
        assert!(
            auth.require(Some(&format!("Bearer {cred}")), Scope::Read)
                .is_err(),
            "not a gRPC token"
        );
        auth.leases.revoke(drover_scheduler::state::LeaseId(1));
        assert!(matches!(
            auth.cache_principal(Some(&format!("Bearer {cred}")), Scope::Write),
            Err(Denied::Unauthenticated(_))
        ));
    }
}
