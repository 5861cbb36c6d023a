//! `coffer scan PATH…`: finds sensitive data in local text files with the managed identifiers of
//! `coffer-scan`, on every core, and reports where — never the values.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use coffer_scan::{Category, Location, Severity};
use serde::Serialize;

/// Largest file read (larger ones are listed as skipped, with the reason).
const MAX_FILE: u64 = 256 * 1024 * 1024;
/// Locations kept per identifier and file (as Macie keeps 15).
const MAX_LOCATIONS: usize = 15;

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Files and directories (searched recursively) to scan.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Exit with status 1 when any finding is at least this severe (low, medium, high).
    #[arg(long, value_name = "SEVERITY", value_parser = parse_severity)]
    fail_on: Option<Severity>,
    /// Print the findings as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn parse_severity(s: &str) -> Result<Severity, String> {
    Severity::parse(s).ok_or_else(|| format!("'{s}' is not a severity; use low, medium or high"))
}

/// What one identifier found in one file.
#[derive(Debug, Serialize)]
struct Finding {
    path: String,
    identifier: &'static str,
    category: Category,
    severity: Severity,
    count: usize,
    locations: Vec<Location>,
    sample: String,
}

#[derive(Debug, Serialize)]
struct Skipped {
    path: String,
    reason: String,
}

#[derive(Debug, Default, Serialize)]
struct Report {
    files_scanned: usize,
    bytes_scanned: u64,
    findings: Vec<Finding>,
    skipped: Vec<Skipped>,
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
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
            collect(&e, out)?;
        }
    } else if meta.is_file() {
        out.push(path.to_owned());
    }
    Ok(())
}

/// What scanning one file gave: its size and findings, or why it was skipped.
type FileResult = Result<(u64, Vec<Finding>), String>;

/// Scans one file: its findings, or why it was skipped.
fn scan_file(path: &Path) -> FileResult {
    let len = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    if len > MAX_FILE {
        return Err(format!("larger than {} MiB", MAX_FILE / (1024 * 1024)));
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    if bytes[..bytes.len().min(8192)].contains(&0) {
        return Err("binary (readers for archives and documents come with later slices)".into());
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut by_id: Vec<Finding> = Vec::new();
    for m in coffer_scan::scan(&text) {
        match by_id.iter_mut().find(|f| f.identifier == m.identifier) {
            Some(f) => {
                f.count += 1;
                if f.locations.len() < MAX_LOCATIONS {
                    f.locations.push(m.location);
                }
            }
            None => by_id.push(Finding {
                path: path.display().to_string(),
                identifier: m.identifier,
                category: m.category,
                severity: m.severity,
                count: 1,
                locations: vec![m.location],
                sample: m.redacted,
            }),
        }
    }
    Ok((len, by_id))
}

pub fn run(args: ScanArgs) -> anyhow::Result<ExitCode> {
    let mut files = Vec::new();
    for p in &args.paths {
        collect(p, &mut files)?;
    }
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(files.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<(usize, FileResult)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(f) = files.get(i) else { break };
                        mine.push((i, scan_file(f)));
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut results = results;
    results.sort_by_key(|(i, _)| *i);
    let mut report = Report::default();
    for (i, r) in results {
        match r {
            Ok((len, findings)) => {
                report.files_scanned += 1;
                report.bytes_scanned += len;
                report.findings.extend(findings);
            }
            Err(reason) => report.skipped.push(Skipped {
                path: files[i].display().to_string(),
                reason,
            }),
        }
    }
    let failed = args
        .fail_on
        .is_some_and(|t| report.findings.iter().any(|f| f.severity >= t));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for f in &report.findings {
            let at: Vec<String> = f
                .locations
                .iter()
                .map(|l| format!("{}:{}", l.line, l.column))
                .collect();
            println!(
                "{:<6} {:<40} {:>4}  {}  at {}  e.g. {}",
                format!("{:?}", f.severity).to_uppercase(),
                f.identifier,
                f.count,
                f.path,
                at.join(", "),
                f.sample
            );
        }
        for s in &report.skipped {
            println!("skipped {}: {}", s.path, s.reason);
        }
        println!(
            "{} file(s), {} byte(s) scanned; {} finding(s) in {} identifier/file pair(s); {} skipped",
            report.files_scanned,
            report.bytes_scanned,
            report.findings.iter().map(|f| f.count).sum::<usize>(),
            report.findings.len(),
            report.skipped.len()
        );
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
