//! PDF text for the scanner, extracted in a child process (`coffer pdf-text`, hidden) that sets
//! hard resource limits on itself before it reads anything. PDF parsers, lopdf included, have crashed on crafted files — panics, huge
//! allocations, and stack overflows, which abort a process and cannot be caught — and Coffer
//! scans untrusted uploads inside its server. In a child, the worst a file can do is end that
//! child: the file is then skipped with the reason, and the scan or server goes on.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Address space the child may add to what it had mapped when it started.
const MEMORY: u64 = 1 << 30;
/// CPU seconds the child may use, and the wall-clock time it is given.
const CPU_SECONDS: u64 = 20;
const WALL: Duration = Duration::from_secs(30);
/// Text kept from one PDF, at most.
const MAX_TEXT: usize = 64 << 20;
/// Decompressed content of one page or font, at most (lopdf's decompression-bomb bound).
const MAX_PAGE_CONTENT: usize = 64 << 20;

/// `coffer pdf-text`: a PDF on stdin, its text on stdout (pages separated by form feeds); exit
/// status 2 and the reason on stderr when it cannot be read.
pub fn child_main() -> std::process::ExitCode {
    // Limits first, before a byte of the file is looked at. The address-space limit counts from
    // what is mapped already (the binary, and the allocator's reserved but unused arenas, about
    // 1 GiB on their own), so that the file gets MEMORY more to work with, and no more.
    let mapped = crate::fsutil::proc_status_bytes("self", "VmSize").unwrap_or(0);
    let limits = [
        (rlimit::Resource::AS, mapped + MEMORY),
        (rlimit::Resource::CPU, CPU_SECONDS),
        (rlimit::Resource::FSIZE, 0),
        (rlimit::Resource::CORE, 0),
        (rlimit::Resource::NOFILE, 16),
    ];
    for (resource, value) in limits {
        if let Err(e) = rlimit::setrlimit(resource, value, value) {
            eprintln!("cannot limit the PDF reader ({resource:?}): {e}");
            return std::process::ExitCode::from(3);
        }
    }
    let mut data = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut data) {
        eprintln!("cannot read the PDF: {e}");
        return std::process::ExitCode::from(2);
    }
    match extract_here(&data) {
        Ok(text) => {
            let mut out = std::io::stdout().lock();
            if out
                .write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .is_err()
            {
                return std::process::ExitCode::from(2);
            }
            std::process::ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("{why}");
            std::process::ExitCode::from(2)
        }
    }
}

/// The extraction itself: only ever called in the child.
fn extract_here(data: &[u8]) -> Result<String, String> {
    let doc = lopdf::Document::load_mem(data).map_err(|e| format!("not a readable PDF ({e})"))?;
    let pages: Vec<lopdf::ObjectId> = doc.get_pages().values().copied().collect();
    let mut text = String::new();
    let mut failed = 0;
    for page in &pages {
        match page_text(&doc, *page, &mut text) {
            Ok(()) => text.push('\u{c}'),
            Err(_) => failed += 1,
        }
        if text.len() > MAX_TEXT {
            return Err(format!("its text is larger than {} MiB", MAX_TEXT >> 20));
        }
    }
    if failed > 0 && failed == pages.len() {
        return Err(format!(
            "no text could be extracted from its {} page(s)",
            pages.len()
        ));
    }
    Ok(text)
}

/// One page's text: shown strings decoded with their fonts' encodings, a line break wherever the
/// text position moves to a new line or a text object ends (so that values on separate lines
/// are not glued together), a space for a wide gap inside a TJ array.
fn page_text(doc: &lopdf::Document, page: lopdf::ObjectId, out: &mut String) -> lopdf::Result<()> {
    let encodings: std::collections::BTreeMap<Vec<u8>, lopdf::Encoding<'_>> = doc
        .get_page_fonts(page)?
        .into_iter()
        .filter_map(|(name, font)| {
            font.get_font_encoding_with_limit(doc, MAX_PAGE_CONTENT)
                .ok()
                .map(|e| (name, e))
        })
        .collect();
    let content =
        lopdf::content::Content::decode(&doc.get_page_content_with_limit(page, MAX_PAGE_CONTENT)?)?;
    let mut encoding = None;
    let newline = |out: &mut String| {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
    };
    for op in &content.operations {
        match op.operator.as_str() {
            "Tf" => {
                encoding = op
                    .operands
                    .first()
                    .and_then(|o| o.as_name().ok())
                    .and_then(|n| encodings.get(n));
            }
            "Tj" | "TJ" => {
                if let Some(e) = encoding {
                    shown(out, e, &op.operands);
                }
            }
            "'" | "\"" => {
                newline(out);
                if let (Some(e), Some(s)) = (encoding, op.operands.last()) {
                    shown(out, e, std::slice::from_ref(s));
                }
            }
            "Td" | "TD" | "T*" | "Tm" | "ET" => newline(out),
            _ => {}
        }
        if out.len() > MAX_TEXT {
            break;
        }
    }
    Ok(())
}

fn shown(out: &mut String, encoding: &lopdf::Encoding<'_>, operands: &[lopdf::Object]) {
    for o in operands {
        match o {
            lopdf::Object::String(bytes, _) => {
                if let Ok(t) = lopdf::Document::decode_text(encoding, bytes) {
                    out.push_str(&t);
                }
            }
            lopdf::Object::Array(items) => shown(out, encoding, items),
            lopdf::Object::Integer(i) if *i < -100 => out.push(' '),
            lopdf::Object::Real(r) if *r < -100.0 => out.push(' '),
            _ => {}
        }
    }
}

/// Extracts a PDF's text in a resource-limited child process; the scanner's [`PdfText`] hook.
///
/// [`PdfText`]: coffer_scan::read::PdfText
pub fn extract(data: &[u8]) -> Result<String, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the coffer binary: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.arg("pdf-text")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_clear();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start the PDF reader: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("the PDF reader has no stdin")?;
    let mut stdout = child.stdout.take().ok_or("the PDF reader has no stdout")?;
    let mut stderr = child.stderr.take().ok_or("the PDF reader has no stderr")?;
    let input = data.to_vec();
    let writer = std::thread::spawn(move || {
        // A child that dies early closes its stdin: that is reported by its exit status.
        let _ = stdin.write_all(&input);
    });
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = (&mut stdout)
            .take(MAX_TEXT as u64 + 1)
            .read_to_end(&mut out);
        out
    });
    let errors = std::thread::spawn(move || {
        let mut err = String::new();
        let _ = (&mut stderr).take(4096).read_to_string(&mut err);
        err
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if started.elapsed() > WALL => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = writer.join();
                return Err(format!("reading it took longer than {} s", WALL.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("the PDF reader failed: {e}")),
        }
    };
    let _ = writer.join();
    let out = reader.join().unwrap_or_default();
    let err = errors.join().unwrap_or_default();
    if !status.success() {
        use std::os::unix::process::ExitStatusExt;
        return Err(match (status.code(), status.signal()) {
            (Some(2), _) if !err.trim().is_empty() => err.trim().to_owned(),
            (_, Some(sig)) => format!(
                "the PDF reader was stopped by signal {sig} (a malformed file, or one past its limits of {} MiB and {CPU_SECONDS} CPU seconds)",
                MEMORY >> 20
            ),
            _ => "the PDF reader failed on this file (it is malformed)".to_owned(),
        });
    }
    if out.len() > MAX_TEXT {
        return Err(format!("its text is larger than {} MiB", MAX_TEXT >> 20));
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}
