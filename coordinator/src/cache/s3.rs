//! Cache entries as objects of an S3-compatible bucket, through `object_store`. An upload of
//! at most one part (5 MiB) is sent as one PUT; a larger one goes up as a multipart upload
//! while it arrives, at most two parts in flight, so memory stays bounded whatever the size.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayloadMut, WriteMultipart};

use super::S3Config;
use super::backend::{CacheError, Download, EntryMeta, PutOutcome};

/// The size of one multipart part, and the most an upload holds in memory at once per part.
const PART: usize = 5 * 1024 * 1024;

pub struct S3Store {
    store: Arc<AmazonS3>,
    bucket: String,
    /// `""` or `"some/prefix"` (no slashes at the ends).
    prefix: String,
}

impl S3Store {
    /// Credentials and defaults come from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL`...; the flags win over them.
    pub fn open(config: &S3Config) -> Result<S3Store, CacheError> {
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(&config.bucket);
        if let Some(region) = &config.region {
            builder = builder.with_region(region);
        }
        if let Some(endpoint) = &config.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        let store = builder.build().map_err(|source| CacheError::S3Config {
            bucket: config.bucket.clone(),
            source: Box::new(source),
        })?;
        Ok(S3Store {
            store: Arc::new(store),
            bucket: config.bucket.clone(),
            prefix: config.prefix.trim_matches('/').to_string(),
        })
    }

    pub fn describe(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    fn path(&self, key: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(key)
        } else {
            Path::from(format!("{}/{key}", self.prefix))
        }
    }

    fn failed(&self, op: &'static str, key: &str, source: object_store::Error) -> CacheError {
        CacheError::ObjectStore {
            store: self.describe(),
            op,
            key: key.to_string(),
            source: Box::new(source),
        }
    }

    pub async fn exists(&self, hash: &str) -> Result<bool, CacheError> {
        match self.store.head(&self.path(hash)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.failed("head", hash, e)),
        }
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
        let path = self.path(hash);
        let mut first = PutPayloadMut::new();
        let mut upload: Option<WriteMultipart> = None;
        let mut written: u64 = 0;
        let stopped = loop {
            let chunk = match body.next().await {
                None => break None,
                Some(Err(e)) => break Some(PutOutcome::Interrupted(e.to_string())),
                Some(Ok(chunk)) => chunk,
            };
            written += chunk.len() as u64;
            if written > limit {
                break Some(PutOutcome::TooLarge);
            }
            match upload.as_mut() {
                None => {
                    first.push(chunk);
                    if first.content_length() > PART {
                        let multipart = self
                            .store
                            .put_multipart(&path)
                            .await
                            .map_err(|e| self.failed("upload", hash, e))?;
                        let mut w = WriteMultipart::new_with_chunk_size(multipart, PART);
                        for part in std::mem::take(&mut first).freeze().into_iter() {
                            w.put(part);
                        }
                        upload = Some(w);
                    }
                }
                Some(w) => {
                    if let Err(e) = w.wait_for_capacity(2).await {
                        if let Some(w) = upload.take() {
                            let _ = w.abort().await;
                        }
                        return Err(self.failed("upload", hash, e));
                    }
                    w.put(chunk);
                }
            }
        };
        if let Some(outcome) = stopped {
            if let Some(w) = upload {
                let _ = w.abort().await;
            }
            return Ok(outcome);
        }
        let done = match upload {
            Some(w) => w.finish().await,
            None => self.store.put(&path, first.freeze()).await,
        };
        done.map_err(|e| self.failed("upload", hash, e))?;
        Ok(PutOutcome::Stored(written))
    }

    pub async fn get(&self, hash: &str) -> Result<Option<Download>, CacheError> {
        match self.store.get(&self.path(hash)).await {
            Ok(r) => Ok(Some(Download {
                size: r.meta.size,
                body: r.into_stream().map_err(std::io::Error::other).boxed(),
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.failed("get", hash, e)),
        }
    }

    pub async fn list(&self) -> Result<Vec<EntryMeta>, CacheError> {
        let prefix = (!self.prefix.is_empty()).then(|| Path::from(self.prefix.as_str()));
        let objects: Vec<_> = self
            .store
            .list(prefix.as_ref())
            .try_collect()
            .await
            .map_err(|e| self.failed("list", "", e))?;
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        Ok(objects
            .into_iter()
            .filter_map(|o| {
                let key = o.location.as_ref().strip_prefix(&strip)?.to_string();
                if key.contains('/') {
                    return None; // not one of ours
                }
                let secs = o.last_modified.timestamp().max(0) as u64;
                Some(EntryMeta {
                    key,
                    size: o.size,
                    modified: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
                })
            })
            .collect())
    }

    pub async fn delete(&self, key: &str) -> Result<(), CacheError> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.failed("delete", key, e)),
        }
    }
}
