//! A cached training result (the embedded policy's copy pretraining, its warm start): a folder
//! named by a key, locked while one process makes it, and finished by `READY.json`, which
//! names the model it made.

use crate::durable::write_atomic;
use anyhow::{Context, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fs::File;
use std::path::{Path, PathBuf};

/// A cache folder held under an exclusive lock for as long as this value lives (concurrent
/// callers wait; the OS releases the lock when a process dies).
pub struct CacheEntry {
    pub dir: PathBuf,
    _lock: File,
}

impl CacheEntry {
    /// Creates or opens `cache/name` and waits for its lock.
    pub fn open(cache: &Path, name: &str) -> Result<CacheEntry> {
        let dir = cache.join(name);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let lock = File::create(dir.join(".lock"))
            .with_context(|| format!("cannot create a lock file in {}", dir.display()))?;
        lock.lock()
            .with_context(|| format!("cannot lock {}", dir.display()))?;
        Ok(CacheEntry { dir, _lock: lock })
    }

    fn ready_file(&self) -> PathBuf {
        self.dir.join("READY.json")
    }

    /// The finished result, when `READY.json` holds one whose model folder (`model`) still has
    /// its weights; None when the entry is new or was cut short.
    pub fn finished<T: DeserializeOwned>(&self, model: impl Fn(&T) -> &Path) -> Result<Option<T>> {
        let ready = self.ready_file();
        let Ok(text) = std::fs::read_to_string(&ready) else {
            return Ok(None);
        };
        let found: T = serde_json::from_str(&text).with_context(|| {
            format!("invalid {} (delete the folder to redo it)", ready.display())
        })?;
        Ok(model(&found)
            .join("model.safetensors")
            .is_file()
            .then_some(found))
    }

    /// Marks the entry finished with `result`.
    pub fn finish<T: Serialize>(&self, result: &T) -> Result<()> {
        write_atomic(
            &self.ready_file(),
            serde_json::to_string_pretty(result)?.as_bytes(),
        )
    }
}
