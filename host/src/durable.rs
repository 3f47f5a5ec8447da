//! Files and folders that survive a crash of the machine, not only of the process. A rename
//! publishes a file or folder atomically, but without `fsync` a power loss or VM crash can
//! leave the renamed name pointing at empty or partial data: every write that is published by
//! a rename syncs the data first and the parent folder after. Also the content hashes that let
//! a reader tell a damaged file from a good one.

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::Write;
use std::path::Path;

/// Flushes a file's data and metadata to the disk.
pub fn sync_file(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot sync {}", path.display()))
}

/// Flushes a folder's entries (the names created, renamed or removed in it) to the disk.
pub fn sync_dir(dir: &Path) -> Result<()> {
    // A folder is opened read-only and synced like a file; this is what makes a rename durable.
    File::open(dir)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot sync the folder {}", dir.display()))
}

/// Flushes every file under `dir` and every folder in it, deepest first.
pub fn sync_tree(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            sync_tree(&entry.path())?;
        } else if kind.is_file() {
            sync_file(&entry.path())?;
        }
    }
    sync_dir(dir)
}

/// The folder that holds `path` (`.` for a bare name).
fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Publishes the fully written folder `staged` as `target` (which must not exist): its files
/// are synced, it is renamed, and the parent folder is synced.
pub fn publish_dir(staged: &Path, target: &Path) -> Result<()> {
    sync_tree(staged)?;
    std::fs::rename(staged, target)
        .with_context(|| format!("cannot move {} to {}", staged.display(), target.display()))?;
    sync_dir(parent_of(target))
}

/// Writes `bytes` to `path` through a synced temporary file and a rename, then syncs the
/// folder. The file is readable by everyone (0644 on Unix), like a file written directly; the
/// temporary file starts private.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let parent = parent_of(path);
    let mut temp = tempfile::NamedTempFile::new_in(parent)
        .with_context(|| format!("cannot write in {}", parent.display()))?;
    temp.write_all(bytes)
        .and_then(|()| temp.as_file().sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        temp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .with_context(|| format!("cannot set the permissions of {}", path.display()))?;
    }
    temp.persist(path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {}", path.display(), e.error))?;
    sync_dir(parent)
}

/// The SHA-256 of a file's content, in lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_the_whole_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"first, longer content").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o644);
        }
    }

    #[test]
    fn publish_dir_moves_a_synced_tree_into_place() {
        let dir = tempfile::tempdir().unwrap();
        let staged = dir.path().join(".partial");
        std::fs::create_dir_all(staged.join("model")).unwrap();
        std::fs::write(staged.join("model/weights"), b"w").unwrap();
        std::fs::write(staged.join("state.json"), b"{}").unwrap();
        let target = dir.path().join("step-1");
        publish_dir(&staged, &target).unwrap();
        assert!(!staged.exists());
        assert_eq!(std::fs::read(target.join("model/weights")).unwrap(), b"w");
        // The target must not exist yet: a rename onto a full folder fails, nothing is lost.
        std::fs::create_dir_all(&staged).unwrap();
        std::fs::write(staged.join("x"), b"x").unwrap();
        assert!(publish_dir(&staged, &target).is_err());
        assert!(target.join("state.json").is_file());
    }

    #[test]
    fn sha256_of_a_file_is_its_contents_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(
            sha256_file(&path).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(sha256_file(&dir.path().join("missing")).is_err());
    }
}
