//! Learned task durations, kept as JSON under `--data-dir` so estimates survive a restart.

use std::path::PathBuf;
use std::time::Duration;

use drover_scheduler::estimate::Estimates;

use crate::error::CoordError;

/// How often changed estimates are written.
const SAVE_EVERY: Duration = Duration::from_secs(2);

pub struct DurationStore {
    path: PathBuf,
    saved: Option<Estimates>,
    last_save: Duration,
}

impl DurationStore {
    pub fn open(data_dir: PathBuf) -> Result<DurationStore, CoordError> {
        std::fs::create_dir_all(&data_dir).map_err(|source| CoordError::DataDir {
            path: data_dir.display().to_string(),
            source,
        })?;
        Ok(DurationStore {
            path: data_dir.join("durations.json"),
            saved: None,
            last_save: Duration::ZERO,
        })
    }

    /// The stored estimates; empty ones when there are none or the file is unreadable.
    pub fn load(&mut self) -> Estimates {
        let loaded = match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %self.path.display(), error = %e, "ignoring unreadable duration history");
                Estimates::default()
            }),
            Err(_) => Estimates::default(),
        };
        self.saved = Some(loaded.clone());
        loaded
    }

    pub fn save_if_due(&mut self, estimates: &Estimates, now: Duration) {
        if now.saturating_sub(self.last_save) >= SAVE_EVERY {
            self.last_save = now;
            self.save(estimates);
        }
    }

    /// Writes the estimates if they changed, atomically (temporary file, then rename).
    pub fn save(&mut self, estimates: &Estimates) {
        if self.saved.as_ref() == Some(estimates) {
            return;
        }
        let tmp = self.path.with_extension("json.tmp");
        let written = serde_json::to_vec(estimates)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        match written {
            Ok(()) => self.saved = Some(estimates.clone()),
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "could not save duration history")
            }
        }
    }
}
