//! Readers: what a file holds, turned into texts the scanner sees and places a finding can name.
//! Plain text, CSV/TSV (with the column header as keyword context), JSON and JSON Lines (with the
//! path's keys as context), gzip, zip (nested, within limits so that a decompression bomb is
//! reported rather than followed), and the text of DOCX, XLSX and PPTX documents. Anything else
//! binary is skipped with the reason. No reader panics on any input.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Read;

use serde::Serialize;

use crate::engine::{Context, Scanner};
use crate::findings::{Collector, Finding, Lines, Location, Place};

/// Extracts the text of a PDF (pages separated by form feeds), or says why it cannot. PDF
/// parsers crash on crafted files, so the binary runs one in a resource-limited child process and
/// hands that in; without one, PDFs are skipped with the reason.
pub type PdfText = fn(&[u8]) -> Result<String, String>;

/// Bounds on what archives and compressed data may expand to, and the PDF extractor.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Archives inside archives, at most.
    pub max_depth: usize,
    /// Entries in one zip archive, at most.
    pub max_entries: usize,
    /// How many times its compressed size one member may expand (beyond the first MiB).
    pub max_ratio: u64,
    /// Bytes one file may expand to in all (every member of every nested archive).
    pub max_expanded: u64,
    /// How PDF text is extracted; `None` skips PDFs.
    pub pdf: Option<PdfText>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 5,
            max_entries: 10_000,
            max_ratio: 100,
            max_expanded: 1 << 30,
            pdf: None,
        }
    }
}

/// A file, or a member of an archive, that was not scanned, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    pub reason: String,
}

/// What scanning one file gave.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// Members of archives that were skipped (the file itself is skipped by an `Err`).
    pub skipped: Vec<Skipped>,
    /// Bytes of text scanned (after decompression and extraction).
    pub bytes_scanned: u64,
}

/// Scans one file's bytes; `name` (its path or key) decides the format with the bytes' magic.
/// An `Err` is why the whole file was skipped.
pub fn scan_bytes(
    scanner: &Scanner,
    name: &str,
    data: &[u8],
    limits: &Limits,
) -> Result<Report, String> {
    let mut walk = Walk {
        scanner,
        limits,
        collector: Collector::default(),
        skipped: Vec::new(),
        bytes: 0,
        expanded: 0,
    };
    walk.item(None, name, data, 0)?;
    Ok(Report {
        findings: walk.collector.findings,
        skipped: walk.skipped,
        bytes_scanned: walk.bytes,
    })
}

/// Text read this much at a time from a stream.
const CHUNK: usize = 8 << 20;
/// Bytes past a chunk scanned with it, so that a value across the boundary is found whole (no
/// identifier's value is longer).
const OVERLAP: usize = 64 << 10;
/// Bytes before a chunk scanned with it, so that a keyword just before the boundary counts.
const BACK: usize = 1024;

/// Scans a file too large to hold in memory, as it is read: plain text in chunks (overlapping, so
/// nothing across a boundary is missed), CSV/TSV row by row, JSON Lines line by line, calling
/// `progress` with the bytes consumed as it goes. Other formats are refused (`Err`, the reason):
/// they are read whole with [`scan_bytes`].
pub fn scan_stream(
    scanner: &Scanner,
    name: &str,
    mut reader: impl Read,
    limits: &Limits,
    progress: &mut dyn FnMut(u64),
) -> Result<Report, String> {
    let mut head = Vec::with_capacity(8192);
    (&mut reader)
        .take(8192)
        .read_to_end(&mut head)
        .map_err(|e| format!("cannot read: {e}"))?;
    let kind = kind(name, &head)?;
    let mut walk = Walk {
        scanner,
        limits,
        collector: Collector::default(),
        skipped: Vec::new(),
        bytes: 0,
        expanded: 0,
    };
    let chained = std::io::Read::chain(std::io::Cursor::new(head.clone()), reader);
    let counted = Counted {
        inner: chained,
        progress,
    };
    match kind {
        Kind::Text => walk
            .stream_text(counted)
            .map_err(|e| format!("cannot read: {e}"))?,
        Kind::Csv(delimiter) => walk.csv(None, counted, delimiter),
        Kind::JsonLines => walk
            .stream_json_lines(counted)
            .map_err(|e| format!("cannot read: {e}"))?,
        _ => {
            return Err(
                "too large to read whole, and not text, CSV or JSON Lines (which are read as a stream)"
                    .into(),
            );
        }
    }
    Ok(Report {
        findings: walk.collector.findings,
        skipped: walk.skipped,
        bytes_scanned: walk.bytes,
    })
}

/// A reader that reports the bytes read through it.
struct Counted<'a, R> {
    inner: R,
    progress: &'a mut dyn FnMut(u64),
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.progress)(n as u64);
        Ok(n)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Gzip,
    Zip,
    Tar,
    Csv(u8),
    Json,
    JsonLines,
    Text,
    Pdf,
}

fn extension(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    base.rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default()
}

fn kind(name: &str, data: &[u8]) -> Result<Kind, String> {
    if data.starts_with(&[0x1f, 0x8b]) {
        return Ok(Kind::Gzip);
    }
    if data.starts_with(b"PK\x03\x04") || data.starts_with(b"PK\x05\x06") {
        return Ok(Kind::Zip);
    }
    // POSIX and GNU tar: "ustar" at offset 257.
    if data.len() >= 512 && &data[257..262] == b"ustar" {
        return Ok(Kind::Tar);
    }
    if data.starts_with(b"%PDF-") {
        return Ok(Kind::Pdf);
    }
    let head = &data[..data.len().min(8192)];
    if head.contains(&0) {
        return Err("binary data".into());
    }
    if std::str::from_utf8(head).is_err() {
        // Not UTF-8 (or cut mid-character at 8 KiB): text if control characters are rare.
        let control = head
            .iter()
            .filter(|&&b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r' | 0x0c))
            .count();
        if control * 100 > head.len() {
            return Err("binary data".into());
        }
    }
    Ok(match extension(name).as_str() {
        "csv" => Kind::Csv(b','),
        "tsv" | "tab" => Kind::Csv(b'\t'),
        "json" => Kind::Json,
        "jsonl" | "ndjson" => Kind::JsonLines,
        _ => Kind::Text,
    })
}

struct Walk<'a> {
    scanner: &'a Scanner,
    limits: &'a Limits,
    collector: Collector,
    skipped: Vec<Skipped>,
    bytes: u64,
    expanded: u64,
}

impl Walk<'_> {
    /// Scans one item (the file, or a member at `member`); `Err` is why it was skipped.
    fn item(
        &mut self,
        member: Option<&str>,
        name: &str,
        data: &[u8],
        depth: usize,
    ) -> Result<(), String> {
        match kind(name, data)? {
            Kind::Gzip => {
                let inner = self.inflate(data)?;
                let inner_name = name
                    .strip_suffix(".gz")
                    .or_else(|| name.strip_suffix(".gzip"))
                    .map(str::to_owned)
                    .or_else(|| name.strip_suffix(".tgz").map(|n| format!("{n}.tar")))
                    .unwrap_or_else(|| name.to_owned());
                self.item(member, &inner_name, &inner, depth)
            }
            Kind::Zip => self.zip(member, data, depth),
            Kind::Tar => self.tar(member, data, depth),
            Kind::Csv(delimiter) => {
                self.csv(member, data, delimiter);
                Ok(())
            }
            Kind::Json => {
                match serde_json::from_slice::<serde_json::Value>(data) {
                    Ok(v) => {
                        self.bytes += data.len() as u64;
                        let mut path = JsonPath::default();
                        self.json(member, 0, &v, &mut path);
                    }
                    Err(_) => self.text(member, &utf8(data), 0),
                }
                Ok(())
            }
            Kind::JsonLines => {
                self.json_lines(member, data);
                Ok(())
            }
            Kind::Text => {
                self.text(member, &utf8(data), 0);
                Ok(())
            }
            Kind::Pdf => {
                let extract = self.limits.pdf.ok_or(
                    "PDF: text extraction is off here (coffer scan and the server extract PDF text in a separate, resource-limited process)",
                )?;
                let text = extract(data).map_err(|why| format!("PDF: {why}"))?;
                self.expanded = self.expanded.saturating_add(text.len() as u64);
                if self.expanded > self.limits.max_expanded {
                    return Err("PDF: its text exceeds the expansion limit".into());
                }
                self.text(member, &text, 0);
                Ok(())
            }
        }
    }

    fn add(
        &mut self,
        member: Option<&str>,
        hit: &crate::Hit,
        value: &str,
        place: impl FnOnce() -> Place,
    ) {
        let rule = self.scanner.rule(hit.rule);
        self.collector.add(
            &rule.id,
            rule.category,
            rule.severity,
            || Location {
                member: member.map(str::to_owned),
                place: place(),
            },
            value,
        );
    }

    /// Text; `line_offset` is added to line numbers (a line of JSON Lines scanned as text).
    fn text(&mut self, member: Option<&str>, text: &str, line_offset: usize) {
        self.bytes += text.len() as u64;
        let hits = self.scanner.scan(text, None);
        if hits.is_empty() {
            return;
        }
        let lines = Lines::new(text);
        for h in &hits {
            let value = &text[h.start..h.end];
            self.add(member, h, value, || match lines.place(h.start, h.end) {
                Place::Text {
                    line,
                    column,
                    start,
                    end,
                } => Place::Text {
                    line: line + line_offset,
                    column,
                    start,
                    end,
                },
                other => other,
            });
        }
    }

    fn csv(&mut self, member: Option<&str>, data: impl Read, delimiter: u8) {
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .has_headers(false)
            .flexible(true)
            .from_reader(data);
        let mut header: Vec<String> = Vec::new();
        let mut contexts: Vec<Context> = Vec::new();
        let mut record = csv::ByteRecord::new();
        let mut row = 0usize;
        loop {
            match reader.read_byte_record(&mut record) {
                Ok(true) => {}
                Ok(false) => break,
                Err(_) => {
                    // Not CSV after all (or damaged past this row): what is left is text.
                    let line = reader.position().line() as usize;
                    let mut rest = Vec::new();
                    let _ = reader.into_inner().read_to_end(&mut rest);
                    self.text(member, &String::from_utf8_lossy(&rest), line);
                    return;
                }
            }
            row += 1;
            for (i, field) in record.iter().enumerate() {
                let field = String::from_utf8_lossy(field);
                self.bytes += field.len() as u64;
                if row == 1 {
                    contexts.push(self.scanner.context(&field));
                    header.push(field.clone().into_owned());
                }
                let ctx = if row == 1 { None } else { contexts.get(i) };
                let hits = self.scanner.scan(&field, ctx);
                for h in &hits {
                    let column_name = header.get(i).cloned().unwrap_or_default();
                    self.add(member, h, &field[h.start..h.end], || Place::Cell {
                        row,
                        column: i + 1,
                        column_name,
                    });
                }
            }
        }
    }

    /// Plain text from a stream, in chunks: each is scanned with `BACK` bytes before it (for
    /// keywords) and `OVERLAP` after (for values across the boundary), and keeps the hits that
    /// start inside it.
    fn stream_text(&mut self, mut r: impl Read) -> std::io::Result<()> {
        let mut buf: Vec<u8> = Vec::new();
        let mut buf_off = 0usize; // stream offset of buf[0]
        let mut a = 0usize; // hits starting at or after a are this chunk's
        let mut dec_a = 0usize; // a's offset in the text as decoded (they differ past bad UTF-8)
        let mut lines_before_a = 0usize;
        let mut eof = false;
        loop {
            while !eof && buf_off + buf.len() < a + CHUNK + OVERLAP {
                let before = buf.len();
                buf.resize(before + (1 << 20), 0);
                let n = r.read(&mut buf[before..])?;
                buf.truncate(before + n);
                eof = n == 0;
            }
            let buf_end = buf_off + buf.len();
            let last = eof && buf_end <= a + CHUNK + OVERLAP;
            // Chunk bounds never split a character (nor an invalid sequence), so that decoding
            // a prefix agrees with decoding the whole.
            let mut b = if last { buf_end } else { a + CHUNK };
            while b < buf_end && is_continuation(buf[b - buf_off]) {
                b += 1;
            }
            let mut ts = a.saturating_sub(BACK).max(buf_off);
            while ts < a && is_continuation(buf[ts - buf_off]) {
                ts += 1;
            }
            let mut te = buf_end;
            if !last {
                while te > b && is_continuation(buf[te - buf_off - 1]) {
                    te -= 1;
                }
                te = te.saturating_sub(usize::from(te > b && buf[te - buf_off - 1] >= 0xC0));
            }
            let slice = &buf[ts - buf_off..te - buf_off];
            let text = utf8(slice);
            // Where a and b fall in the decoded chunk.
            let (l1, l2) = match &text {
                Cow::Borrowed(_) => (a - ts, b - ts),
                Cow::Owned(_) => (
                    String::from_utf8_lossy(&slice[..a - ts]).len(),
                    String::from_utf8_lossy(&slice[..b - ts]).len(),
                ),
            };
            self.bytes += (b - a) as u64;
            let hits = self.scanner.scan(&text, None);
            if !hits.is_empty() {
                let lines = Lines::new(&text);
                let lines_before_ts = lines_before_a
                    - memchr::memchr_iter(b'\n', &buf[ts - buf_off..a - buf_off]).count();
                for h in &hits {
                    if h.start < l1 || h.start >= l2 {
                        continue;
                    }
                    let start = dec_a - l1 + h.start;
                    let end = start + (h.end - h.start);
                    let value = &text[h.start..h.end];
                    let place = match lines.place(h.start, h.end) {
                        Place::Text { line, column, .. } => Place::Text {
                            line: lines_before_ts + line,
                            column,
                            start,
                            end,
                        },
                        other => other,
                    };
                    self.add(None, h, value, || place);
                }
            }
            if last || (eof && b >= buf_end) {
                return Ok(());
            }
            lines_before_a += memchr::memchr_iter(b'\n', &buf[a - buf_off..b - buf_off]).count();
            dec_a = dec_a - l1 + l2;
            a = b;
            let keep_from = a.saturating_sub(BACK).max(buf_off);
            buf.drain(..keep_from - buf_off);
            buf_off = keep_from;
        }
    }

    /// JSON Lines from a stream, a line at a time (a line longer than 16 MiB is skipped).
    fn stream_json_lines(&mut self, r: impl Read) -> std::io::Result<()> {
        use std::io::BufRead;
        const MAX_LINE: u64 = 16 << 20;
        let mut r = std::io::BufReader::with_capacity(1 << 20, r);
        let mut line = Vec::new();
        for i in 0.. {
            line.clear();
            let n = (&mut r).take(MAX_LINE + 1).read_until(b'\n', &mut line)?;
            if n == 0 {
                return Ok(());
            }
            if n as u64 > MAX_LINE && line.last() != Some(&b'\n') {
                self.skip(
                    None,
                    &format!("line {}", i + 1),
                    "a line longer than 16 MiB".into(),
                );
                // Skip the rest of the line.
                let mut rest = Vec::new();
                r.read_until(b'\n', &mut rest)?;
                continue;
            }
            let text = utf8(&line);
            let text = text.trim_end_matches(['\n', '\r']);
            if text.trim().is_empty() {
                continue;
            }
            self.json_line(None, i, text);
        }
        Ok(())
    }

    fn json(
        &mut self,
        member: Option<&str>,
        record: usize,
        v: &serde_json::Value,
        path: &mut JsonPath,
    ) {
        use serde_json::Value;
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    path.push_key(k);
                    self.json(member, record, v, path);
                    path.pop();
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    path.push_index(i);
                    self.json(member, record, v, path);
                    path.pop();
                }
            }
            Value::String(s) => self.json_value(member, record, s, path),
            Value::Number(n) => self.json_value(member, record, &n.to_string(), path),
            Value::Bool(_) | Value::Null => {}
        }
    }

    fn json_value(&mut self, member: Option<&str>, record: usize, s: &str, path: &mut JsonPath) {
        let ctx = path.context(self.scanner);
        let hits = self.scanner.scan(s, ctx);
        for h in &hits {
            let json_path = path.render();
            self.add(member, h, &s[h.start..h.end], || Place::Record {
                record,
                json_path,
            });
        }
    }

    fn json_lines(&mut self, member: Option<&str>, data: &[u8]) {
        let text = utf8(data);
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            self.json_line(member, i, line);
        }
    }

    /// Line `i` of JSON Lines: a record, or text when it is not JSON.
    fn json_line(&mut self, member: Option<&str>, i: usize, line: &str) {
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(v) => {
                self.bytes += line.len() as u64;
                let mut path = JsonPath::default();
                self.json(member, i, &v, &mut path);
            }
            Err(_) => self.text(member, line, i),
        }
    }

    /// Decompresses gzip within the limits.
    fn inflate(&mut self, data: &[u8]) -> Result<Vec<u8>, String> {
        let decoder = flate2::read::MultiGzDecoder::new(data);
        self.bounded(decoder, data.len() as u64)
            .map_err(|e| format!("gzip: {e}"))
    }

    /// Reads a decompressing reader up to the ratio and total limits.
    fn bounded(&mut self, r: impl Read, compressed: u64) -> Result<Vec<u8>, String> {
        let by_ratio = compressed
            .saturating_mul(self.limits.max_ratio)
            .max(1 << 20);
        let left = self.limits.max_expanded.saturating_sub(self.expanded);
        let limit = by_ratio.min(left);
        let mut out = Vec::new();
        r.take(limit + 1)
            .read_to_end(&mut out)
            .map_err(|e| format!("cannot decompress: {e}"))?;
        if out.len() as u64 > limit {
            return Err(if limit == by_ratio {
                format!(
                    "expands more than {}x its compressed size: not followed (a decompression bomb?)",
                    self.limits.max_ratio
                )
            } else {
                format!(
                    "the file expands past {} MiB in all: not followed (a decompression bomb?)",
                    self.limits.max_expanded >> 20
                )
            });
        }
        self.expanded += out.len() as u64;
        Ok(out)
    }

    fn zip(&mut self, member: Option<&str>, data: &[u8], depth: usize) -> Result<(), String> {
        if depth >= self.limits.max_depth {
            return Err(format!(
                "archive nested more than {} deep: not followed",
                self.limits.max_depth
            ));
        }
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(data))
            .map_err(|e| format!("damaged zip archive: {e}"))?;
        if archive.len() > self.limits.max_entries {
            return Err(format!(
                "zip archive with {} entries, more than {}: not followed",
                archive.len(),
                self.limits.max_entries
            ));
        }
        let names: Vec<String> = archive
            .file_names()
            .map(|n| n.map(|c| c.into_owned()).unwrap_or_default())
            .collect();
        if let Some(parts) = office_parts(&names) {
            return self.office(member, &mut archive, &parts);
        }
        for i in 0..archive.len() {
            let mut entry = match archive.by_index(i) {
                Ok(e) => e,
                Err(e) => {
                    self.skip(
                        member,
                        &format!("entry {i}"),
                        format!("unreadable zip entry: {e}"),
                    );
                    continue;
                }
            };
            if entry.is_dir() {
                continue;
            }
            let entry_name = entry
                .name()
                .map(|c| c.into_owned())
                .unwrap_or_else(|_| format!("entry {i}"));
            let path = join(member, &entry_name);
            if entry.encrypted() {
                self.skip(None, &path, "encrypted zip entry".into());
                continue;
            }
            let compressed = entry.compressed_size();
            let bytes = match self.bounded(&mut entry, compressed) {
                Ok(b) => b,
                Err(reason) => {
                    self.skip(None, &path, reason);
                    continue;
                }
            };
            drop(entry);
            if let Err(reason) = self.item(Some(&path), &entry_name, &bytes, depth + 1) {
                self.skip(None, &path, reason);
            }
        }
        Ok(())
    }

    fn tar(&mut self, member: Option<&str>, data: &[u8], depth: usize) -> Result<(), String> {
        if depth >= self.limits.max_depth {
            return Err(format!(
                "archive nested more than {} deep: not followed",
                self.limits.max_depth
            ));
        }
        let mut archive = tar::Archive::new(data);
        let entries = archive
            .entries()
            .map_err(|e| format!("damaged tar archive: {e}"))?;
        for (i, entry) in entries.enumerate() {
            if i >= self.limits.max_entries {
                self.skip(
                    member,
                    "",
                    format!(
                        "tar archive with more than {} entries: the rest not followed",
                        self.limits.max_entries
                    ),
                );
                break;
            }
            let mut entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    self.skip(
                        member,
                        &format!("entry {i}"),
                        format!("damaged tar entry: {e}"),
                    );
                    break;
                }
            };
            if entry.header().entry_type() != tar::EntryType::Regular {
                continue;
            }
            let entry_name = entry
                .path()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_else(|_| format!("entry {i}"));
            let path = join(member, &entry_name);
            // Tar stores members whole: what one holds is bounded by the archive's own size.
            let mut bytes = Vec::new();
            if let Err(e) = entry.read_to_end(&mut bytes) {
                self.skip(None, &path, format!("damaged tar entry: {e}"));
                break;
            }
            if let Err(reason) = self.item(Some(&path), &entry_name, &bytes, depth + 1) {
                self.skip(None, &path, reason);
            }
        }
        Ok(())
    }

    fn office(
        &mut self,
        member: Option<&str>,
        archive: &mut zip::ZipArchive<std::io::Cursor<&[u8]>>,
        parts: &[String],
    ) -> Result<(), String> {
        for part in parts {
            let path = join(member, part);
            let xml = {
                let Ok(mut entry) = archive.by_name(part) else {
                    continue;
                };
                let compressed = entry.compressed_size();
                match self.bounded(&mut entry, compressed) {
                    Ok(b) => b,
                    Err(reason) => {
                        self.skip(None, &path, reason);
                        continue;
                    }
                }
            };
            match office_text(&xml) {
                Ok(text) => self.text(Some(&path), &text, 0),
                Err(e) => self.skip(None, &path, format!("malformed document XML: {e}")),
            }
        }
        Ok(())
    }

    fn skip(&mut self, member: Option<&str>, name: &str, reason: String) {
        self.skipped.push(Skipped {
            member: Some(join(member, name)),
            reason,
        });
    }
}

fn is_continuation(b: u8) -> bool {
    b & 0xC0 == 0x80
}

/// The bytes as text: borrowed when they are UTF-8 (checked fast), with replacement characters
/// where they are not.
fn utf8(data: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(data) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(data),
    }
}

fn join(member: Option<&str>, name: &str) -> String {
    match member {
        Some(m) => format!("{m}/{name}"),
        None => name.to_owned(),
    }
}

/// The parts of an Office Open XML document that hold its text, or `None` if the archive is not
/// a DOCX, XLSX or PPTX.
fn office_parts(names: &[String]) -> Option<Vec<String>> {
    if !names.iter().any(|n| n == "[Content_Types].xml") {
        return None;
    }
    let is = |n: &str| names.iter().any(|x| x == n);
    let pick = |f: &dyn Fn(&str) -> bool| -> Vec<String> {
        let mut v: Vec<String> = names.iter().filter(|n| f(n)).cloned().collect();
        v.sort_by_key(|n| natural_key(n));
        v
    };
    if is("word/document.xml") {
        Some(pick(&|n| {
            n.starts_with("word/")
                && n.ends_with(".xml")
                && [
                    "document",
                    "header",
                    "footer",
                    "footnotes",
                    "endnotes",
                    "comments",
                ]
                .iter()
                .any(|p| n["word/".len()..].starts_with(p))
        }))
    } else if is("xl/workbook.xml") {
        Some(pick(&|n| {
            n == "xl/sharedStrings.xml"
                || (n.starts_with("xl/worksheets/") && n.ends_with(".xml"))
                || (n.starts_with("xl/comments") && n.ends_with(".xml"))
        }))
    } else if is("ppt/presentation.xml") {
        Some(pick(&|n| {
            (n.starts_with("ppt/slides/") || n.starts_with("ppt/notesSlides/"))
                && n.ends_with(".xml")
        }))
    } else {
        None
    }
}

/// Sorts slide2 before slide10.
fn natural_key(n: &str) -> (String, u64) {
    let digits: String = n.chars().filter(char::is_ascii_digit).collect();
    let stem: String = n.chars().filter(|c| !c.is_ascii_digit()).collect();
    (stem, digits.parse().unwrap_or(0))
}

/// The text of a WordprocessingML, SpreadsheetML or PresentationML part: the contents of its text
/// elements (`w:t`, `a:t`, `t`) and of cell values that are not shared-string indexes, a line per
/// paragraph or row.
fn office_text(xml: &[u8]) -> Result<String, String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut out = String::new();
    let mut buf = Vec::new();
    let mut capture = false;
    let mut shared_cell = false;
    loop {
        match reader.read_event_into(&mut buf) {
            Ok(Event::Start(e)) => {
                let name = e.local_name();
                match name.as_ref() {
                    b"t" => capture = true,
                    b"v" => capture = !shared_cell,
                    b"c" => {
                        shared_cell = e.attributes().flatten().any(|a| {
                            a.key.local_name().as_ref() == b"t" && a.value.as_ref() == b"s"
                        });
                    }
                    _ => {}
                }
            }
            Ok(Event::End(e)) => match e.local_name().as_ref() {
                b"t" | b"v" => capture = false,
                b"p" | b"si" | b"row" => out.push('\n'),
                b"c" => out.push('\t'),
                _ => {}
            },
            Ok(Event::Empty(e)) => match e.local_name().as_ref() {
                b"br" | b"cr" => out.push('\n'),
                b"tab" => out.push('\t'),
                _ => {}
            },
            Ok(Event::Text(t)) if capture => {
                let raw = String::from_utf8_lossy(t.as_ref()).into_owned();
                out.push_str(&quick_xml::escape::unescape(&raw).map_err(|e| e.to_string())?);
            }
            Ok(Event::GeneralRef(r)) if capture => {
                let name = String::from_utf8_lossy(r.as_ref()).into_owned();
                let entity = format!("&{name};");
                out.push_str(&quick_xml::escape::unescape(&entity).map_err(|e| e.to_string())?);
            }
            Ok(Event::CData(t)) if capture => out.push_str(&String::from_utf8_lossy(t.as_ref())),
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
        buf.clear();
    }
    Ok(out)
}

/// A JSON path being walked, its rendering (`$.people[2].ssn`) and the keyword context of its
/// keys, cached per distinct key sequence.
#[derive(Debug, Default)]
struct JsonPath {
    parts: Vec<Part>,
    contexts: HashMap<String, Context>,
}

#[derive(Debug)]
enum Part {
    Key(String),
    Index(usize),
}

impl JsonPath {
    fn push_key(&mut self, k: &str) {
        self.parts.push(Part::Key(k.to_owned()));
    }
    fn push_index(&mut self, i: usize) {
        self.parts.push(Part::Index(i));
    }
    fn pop(&mut self) {
        self.parts.pop();
    }

    fn keys(&self) -> String {
        let mut s = String::new();
        for p in &self.parts {
            if let Part::Key(k) = p {
                s.push_str(k);
                s.push(' ');
            }
        }
        s
    }

    fn context(&mut self, scanner: &Scanner) -> Option<&Context> {
        let keys = self.keys();
        if keys.is_empty() {
            return None;
        }
        Some(
            self.contexts
                .entry(keys)
                .or_insert_with_key(|k| scanner.context(k)),
        )
    }

    fn render(&self) -> String {
        let mut s = String::from("$");
        for p in &self.parts {
            match p {
                Part::Key(k)
                    if !k.is_empty() && k.chars().all(|c| c.is_alphanumeric() || c == '_') =>
                {
                    s.push('.');
                    s.push_str(k);
                }
                Part::Key(k) => {
                    s.push_str("['");
                    s.push_str(&k.replace('\\', "\\\\").replace('\'', "\\'"));
                    s.push_str("']");
                }
                Part::Index(i) => {
                    s.push('[');
                    s.push_str(&i.to_string());
                    s.push(']');
                }
            }
        }
        s
    }
}
