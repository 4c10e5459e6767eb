//! Per-lease credentials: what a task gets instead of any long-lived token. A credential
//! names its lease and fencing token and carries an HMAC of both under a key kept in the data
//! dir, so it survives a coordinator restart; it is honoured only while its lease is active
//! (the actor adds leases as they are granted and drops them as they end).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use drover_scheduler::state::LeaseId;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::constant_time_eq;
use crate::error::CoordError;

/// The file under the data dir holding the key.
const KEY_FILE: &str = "lease-credential.key";
const PREFIX: &str = "drover-lease-";
const READ_PREFIX: &str = "drover-read-";

/// What an active lease's credential allows: cache reads and writes for its run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseAccess {
    pub lease: LeaseId,
    pub run_id: String,
    pub cache_namespace: Option<String>,
}

pub struct LeaseCredentials {
    key: [u8; 32],
    active: Mutex<HashMap<LeaseId, (u64, LeaseAccess)>>,
}

impl LeaseCredentials {
    /// Reads the key from the data dir, making one (readable by the owner only) the first time.
    pub fn open(data_dir: &Path) -> Result<LeaseCredentials, CoordError> {
        let path = data_dir.join(KEY_FILE);
        let failed = |source| CoordError::DataDir {
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(data_dir).map_err(failed)?;
        let key = match std::fs::read(&path) {
            Ok(bytes) if bytes.len() == 32 => {
                let mut key = [0u8; 32];
                key.copy_from_slice(&bytes);
                key
            }
            Ok(_) | Err(_) => {
                let mut key = [0u8; 32];
                getrandom::fill(&mut key).map_err(|e| failed(std::io::Error::other(e)))?;
                write_private(&path, &key).map_err(failed)?;
                key
            }
        };
        Ok(LeaseCredentials {
            key,
            active: Mutex::new(HashMap::new()),
        })
    }

    /// An in-memory key, for tests.
    #[cfg(test)]
    pub fn ephemeral() -> LeaseCredentials {
        LeaseCredentials {
            key: [7; 32],
            active: Mutex::new(HashMap::new()),
        }
    }

    fn mac(&self, lease: LeaseId, token: u64) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length works");
        mac.update(format!("{lease}:{token}").as_bytes());
        hex(&mac.finalize().into_bytes())
    }

    /// The credential for a lease that is now active.
    pub fn issue(&self, token: u64, access: LeaseAccess) -> String {
        let lease = access.lease;
        let credential = format!("{PREFIX}{lease}-{token}-{}", self.mac(lease, token));
        self.active
            .lock()
            .expect("not poisoned")
            .insert(lease, (token, access));
        credential
    }

    /// The lease ended: its credential is refused from now on.
    pub fn revoke(&self, lease: LeaseId) {
        self.active.lock().expect("not poisoned").remove(&lease);
    }

    /// What a presented credential allows, if it is one of an active lease.
    pub fn verify(&self, presented: &str) -> Option<LeaseAccess> {
        let rest = presented.strip_prefix(PREFIX)?;
        let mut parts = rest.splitn(3, '-');
        let lease: LeaseId = parts.next()?.parse().ok()?;
        let token: u64 = parts.next()?.parse().ok()?;
        let mac = parts.next()?;
        if !constant_time_eq(mac.as_bytes(), self.mac(lease, token).as_bytes()) {
            return None;
        }
        let active = self.active.lock().expect("not poisoned");
        match active.get(&lease) {
            Some((t, access)) if *t == token => Some(access.clone()),
            _ => None,
        }
    }

    /// A read-only cache credential for the main job of a run: it reads the run's cache
    /// namespace (`None`: the default one) and the default one. It names the run and the
    /// namespace and carries an HMAC of both, so it needs no table and survives a restart.
    pub fn issue_read(&self, run_id: &str, cache_namespace: Option<&str>) -> String {
        let run = hex(run_id.as_bytes());
        let ns = hex(cache_namespace.unwrap_or_default().as_bytes());
        format!("{READ_PREFIX}{run}-{ns}-{}", self.mac_read(&run, &ns))
    }

    /// The run and cache namespace of a read credential this coordinator issued.
    pub fn verify_read(&self, presented: &str) -> Option<(String, Option<String>)> {
        let rest = presented.strip_prefix(READ_PREFIX)?;
        let mut parts = rest.splitn(3, '-');
        let (run, ns, mac) = (parts.next()?, parts.next()?, parts.next()?);
        if !constant_time_eq(mac.as_bytes(), self.mac_read(run, ns).as_bytes()) {
            return None;
        }
        let text = |h: &str| String::from_utf8(unhex(h)?).ok();
        let ns = text(ns)?;
        Some((text(run)?, (!ns.is_empty()).then_some(ns)))
    }

    fn mac_read(&self, run_hex: &str, ns_hex: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length works");
        mac.update(format!("read:{run_hex}:{ns_hex}").as_bytes());
        hex(&mac.finalize().into_bytes())
    }

    /// Whether a string looks like a lease credential (for messages).
    pub fn looks_like(presented: &str) -> bool {
        presented.starts_with(PREFIX)
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut f = options.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(n: u64) -> LeaseAccess {
        LeaseAccess {
            lease: LeaseId(n),
            run_id: "run-1".into(),
            cache_namespace: None,
        }
    }

    #[test]
    fn a_credential_works_while_its_lease_is_active() {
        let c = LeaseCredentials::ephemeral();
        let cred = c.issue(9, access(3));
        assert_eq!(c.verify(&cred), Some(access(3)));
        assert_eq!(c.verify(&cred.replace("-9-", "-8-")), None, "another token");
        let mut forged = cred.clone();
        let last = forged.pop().unwrap();
        forged.push(if last == '0' { '1' } else { '0' });
        assert_eq!(c.verify(&forged), None, "a forged MAC");
        c.revoke(LeaseId(3));
        assert_eq!(c.verify(&cred), None, "the lease ended");
    }

    #[test]
    fn a_read_credential_names_its_run_and_namespace_and_cannot_be_forged() {
        let c = LeaseCredentials::ephemeral();
        let cred = c.issue_read("run-7", Some("pr-12"));
        assert_eq!(
            c.verify_read(&cred),
            Some(("run-7".into(), Some("pr-12".into())))
        );
        let cred = c.issue_read("run-7", None);
        assert_eq!(c.verify_read(&cred), Some(("run-7".into(), None)));
        let other = c.issue_read("run-8", None);
        let (head, _) = cred.rsplit_once('-').unwrap();
        let (_, other_mac) = other.rsplit_once('-').unwrap();
        assert_eq!(
            c.verify_read(&format!("{head}-{other_mac}")),
            None,
            "another run's MAC"
        );
        assert_eq!(c.verify(&cred), None, "not a lease credential");
    }
}
