//! Files written so that nothing a user saved is ever lost: a file or a whole directory
//! replaced atomically (temporary sibling, flush, rename), and the leftovers of writes killed
//! midway cleaned up.

use std::io::Write;
use std::path::{Path, PathBuf};

/// An I/O operation on `path` failed.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct FileError {
    /// The file or directory.
    pub path: PathBuf,
    /// The underlying error.
    pub source: std::io::Error,
}

/// The error of an I/O operation on `path`.
fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> FileError {
    let path = path.to_path_buf();
    move |source| FileError { path, source }
}

/// Writes `bytes` to `path` atomically: to a temporary file in the same directory, flushed to
/// disk, then renamed over `path`. A reader sees the old file or the new one, never a mix, and
/// a crash mid-write leaves the old file intact.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    let (dir, name) = siblings(path);
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io_error(path))
}

/// The folder of `path` and its name, for the temporary siblings that [`write_atomic`] and
/// [`write_dir_atomic`] make beside it (`.NAME.tmp-PID`, `.NAME.old-PID`).
fn siblings(dir: &Path) -> (PathBuf, String) {
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    (parent, name)
}

/// Cleans up after runs killed while writing `dir`: a `.NAME.old-*` left where `dir` is
/// missing (killed between the two renames) is moved back, and every `.NAME.tmp-*` and
/// remaining `.NAME.old-*` is removed. Returns the paths it acted on.
pub fn recover_dir(dir: &Path) -> Result<Vec<PathBuf>, FileError> {
    let (parent, name) = siblings(dir);
    let Ok(entries) = std::fs::read_dir(&parent) else {
        return Ok(Vec::new());
    };
    let (tmp, old) = (format!(".{name}.tmp-"), format!(".{name}.old-"));
    let mut acted = Vec::new();
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if file_name.starts_with(&old) && !dir.exists() {
            std::fs::rename(&path, dir).map_err(io_error(&path))?;
            acted.push(path);
        } else if file_name.starts_with(&tmp) || file_name.starts_with(&old) {
            std::fs::remove_dir_all(&path).map_err(io_error(&path))?;
            acted.push(path);
        }
    }
    Ok(acted)
}

/// Writes `files` (name, contents) as the directory `dir`, replacing it as a whole: they are
/// written and flushed into `.NAME.tmp-PID` next to `dir`; then `dir` (when it exists) is
/// renamed to `.NAME.old-PID`, the new directory renamed to `dir`, and the old one removed.
/// A crash leaves `dir` complete (old or new) or, between the two renames, absent with the old
/// one beside it, which [`recover_dir`] (run first here and by `train`) moves back.
pub fn write_dir_atomic(dir: &Path, files: &[(&str, &[u8])]) -> Result<(), FileError> {
    recover_dir(dir)?;
    let (parent, name) = siblings(dir);
    let pid = std::process::id();
    let tmp = parent.join(format!(".{name}.tmp-{pid}"));
    let old = parent.join(format!(".{name}.old-{pid}"));
    std::fs::create_dir_all(&parent).map_err(io_error(&parent))?;
    let result = (|| {
        std::fs::create_dir(&tmp).map_err(io_error(&tmp))?;
        for (file, bytes) in files {
            let path = tmp.join(file);
            let mut out = std::fs::File::create(&path).map_err(io_error(&path))?;
            // Half the file, a pause for fault-injection tests, the rest.
            let (head, tail) = bytes.split_at(bytes.len() / 2);
            out.write_all(head).map_err(io_error(&path))?;
            test_pause();
            out.write_all(tail).map_err(io_error(&path))?;
            out.sync_all().map_err(io_error(&path))?;
            test_pause();
        }
        sync_dir(&tmp);
        if dir.exists() {
            if !dir.is_dir() {
                return Err(FileError {
                    path: dir.to_path_buf(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        "exists and is not a directory",
                    ),
                });
            }
            std::fs::rename(dir, &old).map_err(io_error(dir))?;
            test_pause();
            std::fs::rename(&tmp, dir).map_err(io_error(dir))?;
            test_pause();
            sync_dir(&parent);
            std::fs::remove_dir_all(&old).map_err(io_error(&old))?;
        } else {
            std::fs::rename(&tmp, dir).map_err(io_error(dir))?;
        }
        sync_dir(&parent);
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
        if old.exists() && !dir.exists() {
            let _ = std::fs::rename(&old, dir);
        }
    }
    result
}

/// Fault injection for tests at each step of [`write_dir_atomic`] (in the middle and at the
/// end of every file, after each rename): `FOCAL_TEST_WRITE_ABORT_AT=N` aborts the process at
/// the N-th such point of its run (counted from 1), as a kill would, so that a test can stop a
/// run at every point of a save in turn. Unset (always, outside tests), nothing happens.
fn test_pause() {
    static ABORT_AT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    static REACHED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let abort_at = *ABORT_AT.get_or_init(|| {
        std::env::var("FOCAL_TEST_WRITE_ABORT_AT")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    if let Some(n) = abort_at
        && REACHED.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == n
    {
        std::process::abort();
    }
}

/// Flushes a directory's entries (the renames) to disk where the system allows it.
fn sync_dir(dir: &Path) {
    if let Ok(handle) = std::fs::File::open(dir) {
        let _ = handle.sync_all();
    }
}
