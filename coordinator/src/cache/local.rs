//! Cache entries as files: `DIR/<hash>`. An upload is written to `DIR/.tmp/` and then linked
//! into place, so a reader never sees half an entry and two uploads of one hash cannot both
//! win. A hit refreshes the file's modified time, which makes age eviction least-recently-used.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;

use super::backend::{CacheError, Download, EntryMeta, PutOutcome};
use crate::error::CoordError;

pub struct LocalStore {
    dir: PathBuf,
    tmp: PathBuf,
}

impl LocalStore {
    pub async fn open(dir: PathBuf) -> Result<LocalStore, CoordError> {
        let tmp = dir.join(".tmp");
        let data_dir_error = |source| CoordError::DataDir {
            path: tmp.display().to_string(),
            source,
        };
        // Uploads that a crash cut short are of no use.
        let _ = tokio::fs::remove_dir_all(&tmp).await;
        tokio::fs::create_dir_all(&tmp)
            .await
            .map_err(data_dir_error)?;
        Ok(LocalStore { dir, tmp })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, hash: &str) -> PathBuf {
        self.dir.join(hash)
    }

    pub async fn exists(&self, hash: &str) -> Result<bool, CacheError> {
        let path = self.path(hash);
        tokio::fs::try_exists(&path)
            .await
            .map_err(CacheError::io(&path))
    }

    pub async fn put<S, E>(
        &self,
        hash: &str,
        mut body: S,
        limit: u64,
    ) -> Result<PutOutcome, CacheError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        if self.exists(hash).await? {
            return Ok(PutOutcome::Exists);
        }
        static UPLOAD: AtomicU64 = AtomicU64::new(0);
        let tmp = self.tmp.join(format!(
            "{hash}.{}.{}",
            std::process::id(),
            UPLOAD.fetch_add(1, Ordering::Relaxed)
        ));
        let shown = |e| CacheError::io(&tmp)(e);
        let mut file = tokio::fs::File::create(&tmp).await.map_err(shown)?;
        let mut written: u64 = 0;
        let outcome = loop {
            match body.next().await {
                None => break None,
                Some(Err(e)) => break Some(PutOutcome::Interrupted(e.to_string())),
                Some(Ok(chunk)) => {
                    written += chunk.len() as u64;
                    if written > limit {
                        break Some(PutOutcome::TooLarge);
                    }
                    if let Err(e) = file.write_all(&chunk).await {
                        drop(file);
                        let _ = tokio::fs::remove_file(&tmp).await;
                        return Err(shown(e));
                    }
                }
            }
        };
        if let Some(outcome) = outcome {
            drop(file);
            let _ = tokio::fs::remove_file(&tmp).await;
            return Ok(outcome);
        }
        let flushed = file.flush().await;
        drop(file);
        if let Err(e) = flushed {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(shown(e));
        }
        let linked = tokio::fs::hard_link(&tmp, self.path(hash)).await;
        let _ = tokio::fs::remove_file(&tmp).await;
        match linked {
            Ok(()) => Ok(PutOutcome::Stored(written)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(PutOutcome::Exists),
            Err(e) => Err(CacheError::io(&self.path(hash))(e)),
        }
    }

    pub async fn get(&self, hash: &str) -> Result<Option<Download>, CacheError> {
        let path = self.path(hash);
        let file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(CacheError::io(&path)(e)),
        };
        let meta = file.metadata().await.map_err(CacheError::io(&path))?;
        // Refresh the entry's age: it was just used.
        let touch = file
            .try_clone()
            .await
            .map_err(CacheError::io(&path))?
            .into_std()
            .await;
        tokio::task::spawn_blocking(move || {
            let _ = touch.set_modified(SystemTime::now());
        });
        Ok(Some(Download {
            size: meta.len(),
            body: tokio_util::io::ReaderStream::new(file).boxed(),
        }))
    }

    pub async fn list(&self) -> Result<Vec<EntryMeta>, CacheError> {
        let shown = |e| CacheError::io(&self.dir)(e);
        let mut dir = tokio::fs::read_dir(&self.dir).await.map_err(shown)?;
        let mut out = Vec::new();
        while let Some(entry) = dir.next_entry().await.map_err(shown)? {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            // An entry evicted meanwhile is simply not listed.
            let Ok(meta) = entry.metadata().await else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            out.push(EntryMeta {
                key: name,
                size: meta.len(),
                modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            });
        }
        Ok(out)
    }

    pub async fn delete(&self, key: &str) -> Result<(), CacheError> {
        match tokio::fs::remove_file(self.path(key)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CacheError::io(&self.path(key))(e)),
        }
    }
}
