//! Small file-system helpers the commands share: the files of a tree, a process's memory figures
//! from /proc, and output files that appear only once complete.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// Every regular file at or under `path`, in path order; symbolic links are not followed and
/// entries that cannot be read are skipped.
pub fn files_under(path: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let meta = std::fs::symlink_metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if meta.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)
            .with_context(|| format!("cannot list {}", path.display()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        entries.sort();
        for e in entries {
            files_under(&e, out)?;
        }
    } else if meta.is_file() {
        out.push(path.to_owned());
    }
    Ok(())
}

/// A memory figure of a process (`pid`, or `self`) from /proc/PID/status (e.g. `VmHWM`, the
/// peak resident size, or `VmSize`), in bytes.
pub fn proc_status_bytes(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

/// A file next to `out` (a `.coffer-*.partial` in the same directory, created if needed) to
/// write into; [`persist`] renames it to `out` once it is complete, and dropping it instead
/// removes it, so a failure never leaves a partial output behind.
pub fn aside(out: &Path) -> anyhow::Result<tempfile::NamedTempFile> {
    let dir = out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    tempfile::Builder::new()
        .prefix(".coffer-")
        .suffix(".partial")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))
}

/// Makes a file from [`aside`] durable and gives it its name.
pub fn persist(tmp: tempfile::NamedTempFile, out: &Path) -> anyhow::Result<()> {
    tmp.as_file().sync_all()?;
    tmp.persist(out)
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}
