//! One writer per output folder. A command that writes a run, an evaluation or an index takes
//! an exclusive OS lock on `FOLDER/.host.lock` for as long as it runs; a second process that
//! wants the same folder is refused at once with the holder's pid and command. The lock is the
//! kernel's (`flock`), so it ends with the process however it ends: a SIGKILL never leaves a
//! stale lock behind, and the file left in the folder means nothing on its own.

use anyhow::{Context, Result, bail};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file's name inside the folder.
pub const LOCK_FILE: &str = ".host.lock";

/// An exclusive lock on a folder, held until dropped (or the process ends).
#[derive(Debug)]
pub struct FolderLock {
    /// Holds the lock while open.
    _file: File,
    path: PathBuf,
}

impl FolderLock {
    /// Creates `folder` if needed and locks it for `command` (e.g. "host train"). Fails at
    /// once, naming the folder and the holder, when another process holds it.
    pub fn acquire(folder: &Path, command: &str) -> Result<FolderLock> {
        std::fs::create_dir_all(folder)
            .with_context(|| format!("cannot create {}", folder.display()))?;
        let path = folder.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open the lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                // The holder wrote its line under the lock; a read racing that write may see
                // none of it, and then the message says so.
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                bail!(
                    "{} is in use by another process ({}); wait for it to end, or choose \
                     another folder",
                    folder.display(),
                    if holder.is_empty() {
                        "it has not said which yet"
                    } else {
                        holder
                    }
                );
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        let holder = format!("pid {}, `{command}`", std::process::id());
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(holder.as_bytes()))
            .and_then(|()| file.flush())
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(FolderLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_folder_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("run");
        let first = FolderLock::acquire(&folder, "host train").unwrap();
        assert!(first.path().is_file());
        // A second open file description conflicts even within one process.
        let error = FolderLock::acquire(&folder, "host eval")
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            format!(
                "{} is in use by another process (pid {}, `host train`); wait for it to end, \
                 or choose another folder",
                folder.display(),
                std::process::id()
            )
        );
        drop(first);
        let again = FolderLock::acquire(&folder, "host eval").unwrap();
        assert_eq!(
            std::fs::read_to_string(again.path()).unwrap(),
            format!("pid {}, `host eval`", std::process::id())
        );
    }
}
