//! The storage behind the cache: the local file system or S3-compatible object storage.
//! Both stream: uploads are written as they arrive, downloads are sent as they are read.

use std::time::SystemTime;

use bytes::Bytes;
use futures_util::Stream;
use futures_util::stream::BoxStream;

use super::local::LocalStore;
use super::s3::S3Store;

/// Why the storage behind the cache failed.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{store} {op} {key}: {source}")]
    ObjectStore {
        store: String,
        op: &'static str,
        key: String,
        source: Box<object_store::Error>,
    },
    #[error("S3 bucket `{bucket}`: {source}")]
    S3Config {
        bucket: String,
        source: Box<object_store::Error>,
    },
}

impl CacheError {
    pub(super) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
        move |source| CacheError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// One stored entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryMeta {
    pub key: String,
    pub size: u64,
    /// Last use (local: refreshed on every hit) or last write (S3).
    pub modified: SystemTime,
}

/// How an upload ended.
#[derive(Debug, PartialEq, Eq)]
pub enum PutOutcome {
    Stored(u64),
    /// The entry was there already (or another upload of it won the race).
    Exists,
    /// The body went past the size limit; nothing was kept.
    TooLarge,
    /// The client's body broke off; nothing was kept.
    Interrupted(String),
}

/// A download: its length and its bytes.
pub struct Download {
    pub size: u64,
    pub body: BoxStream<'static, Result<Bytes, std::io::Error>>,
}

pub enum Backend {
    Local(LocalStore),
    S3(S3Store),
}

impl Backend {
    pub fn describe(&self) -> String {
        match self {
            Backend::Local(l) => format!("local {}", l.dir().display()),
            Backend::S3(s) => s.describe(),
        }
    }

    pub async fn exists(&self, hash: &str) -> Result<bool, CacheError> {
        match self {
            Backend::Local(l) => l.exists(hash).await,
            Backend::S3(s) => s.exists(hash).await,
        }
    }

    pub async fn put<S, E>(&self, hash: &str, body: S, limit: u64) -> Result<PutOutcome, CacheError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        match self {
            Backend::Local(l) => l.put(hash, body, limit).await,
            Backend::S3(s) => s.put(hash, body, limit).await,
        }
    }

    pub async fn get(&self, hash: &str) -> Result<Option<Download>, CacheError> {
        match self {
            Backend::Local(l) => l.get(hash).await,
            Backend::S3(s) => s.get(hash).await,
        }
    }

    pub async fn list(&self) -> Result<Vec<EntryMeta>, CacheError> {
        match self {
            Backend::Local(l) => l.list().await,
            Backend::S3(s) => s.list().await,
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), CacheError> {
        match self {
            Backend::Local(l) => l.delete(key).await,
            Backend::S3(s) => s.delete(key).await,
        }
    }
}

/// Nx's hashes are decimal digits; anything that is safe as a file name and an object key is
/// accepted, so other clients of the same API work too.
pub fn valid_hash(hash: &str) -> bool {
    !hash.is_empty()
        && hash.len() <= 128
        && !hash.starts_with('.')
        && hash
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_safe_names() {
        assert!(valid_hash("12345678901234567890"));
        assert!(valid_hash("abc-DEF_1.tar"));
        assert!(!valid_hash(""));
        assert!(!valid_hash(".."));
        assert!(!valid_hash("a/b"));
        assert!(!valid_hash("a\\b"));
        assert!(!valid_hash(&"1".repeat(129)));
    }
}
