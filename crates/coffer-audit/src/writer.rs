//! The writer: one thread appends records, group-commits them (one write and one `fdatasync` for
//! everything that arrived together) and only then acknowledges each request, so an acknowledged
//! request's event is on disk. Digests are signed every `digest_interval` while events flow, and
//! when a segment closes (size limit, shutdown, or recovery at the next start after a crash).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use base64::Engine;

use crate::record::{self, Digest, GENESIS, MAX_LINE, Record, RecordBody, Start};
use crate::{AuditError, HEAD_FILE, Result, segment_name, segments};

/// Signs digests. The server implements it with an ECDSA P-384 key wrapped under the root key.
pub trait DigestSigner: Send + Sync + std::fmt::Debug {
    /// ECDSA P-384 / SHA-384 signature, ASN.1 DER.
    fn sign(&self, message: &[u8]) -> std::result::Result<Vec<u8>, String>;
    /// DER SubjectPublicKeyInfo of the key that checks the signatures.
    fn public_key_der(&self) -> &[u8];
}

#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// A segment closes once it holds this many bytes.
    pub segment_bytes: u64,
    /// A digest is signed at least this often while events are written.
    pub digest_interval: Duration,
}

impl Default for AuditOptions {
    fn default() -> Self {
        Self {
            segment_bytes: 64 * 1024 * 1024,
            digest_interval: Duration::from_secs(60),
        }
    }
}

enum Cmd {
    Event(Vec<u8>, tokio::sync::oneshot::Sender<Result<()>>),
    /// After a failure: try to write again (a signed digest), to learn whether the log recovered.
    Probe(tokio::sync::oneshot::Sender<Result<()>>),
    Close(tokio::sync::oneshot::Sender<Result<()>>),
}

/// Handle to the audit log; cheap to share.
#[derive(Debug)]
pub struct AuditLog {
    tx: Mutex<Option<mpsc::Sender<Cmd>>>,
    failed: Arc<AtomicBool>,
    last_error: Arc<Mutex<Option<String>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    dir: PathBuf,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Cmd::Event(..) => "Cmd::Event",
            Cmd::Probe(_) => "Cmd::Probe",
            Cmd::Close(_) => "Cmd::Close",
        })
    }
}

impl AuditLog {
    /// Opens the log in `dir` (created 0700 if needed): repairs an unfinished last line left by a
    /// crash, closes the previous segment if it was left open, and starts a new segment.
    pub fn open(
        dir: &Path,
        signer: Arc<dyn DigestSigner>,
        options: AuditOptions,
    ) -> Result<AuditLog> {
        std::fs::create_dir_all(dir).map_err(|e| AuditError::io(dir, e))?;
        set_private(dir)?;
        let mut w = Writer::resume(dir, signer, options)?;
        let failed = Arc::new(AtomicBool::new(false));
        let last_error = Arc::new(Mutex::new(None));
        let (tx, rx) = mpsc::channel();
        let (f, le) = (failed.clone(), last_error.clone());
        let thread = std::thread::Builder::new()
            .name("coffer-audit".into())
            .spawn(move || w.run(rx, f, le))
            .map_err(|e| AuditError::Unavailable(format!("cannot start the writer thread: {e}")))?;
        Ok(AuditLog {
            tx: Mutex::new(Some(tx)),
            failed,
            last_error,
            thread: Mutex::new(Some(thread)),
            dir: dir.to_owned(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends `event` (one JSON object, compact: no newline) and returns once it is on disk.
    pub async fn record(&self, event: Vec<u8>) -> Result<()> {
        if event.first() != Some(&b'{') || event.contains(&b'\n') || event.len() > MAX_LINE - 256 {
            return Err(AuditError::Invalid(
                "an event must be one compact JSON object under 1 MiB".into(),
            ));
        }
        let (ack, done) = tokio::sync::oneshot::channel();
        self.send(Cmd::Event(event, ack))?;
        done.await
            .map_err(|_| AuditError::Unavailable("the audit writer stopped".into()))?
    }

    fn send(&self, cmd: Cmd) -> Result<()> {
        let guard = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        guard
            .as_ref()
            .ok_or_else(|| AuditError::Unavailable("the audit log is closed".into()))?
            .send(cmd)
            .map_err(|_| AuditError::Unavailable("the audit writer stopped".into()))
    }

    /// Ok while the log is writable. After a failure, has the writer try once more (opening the
    /// next segment if a rotation failed, and committing a signed digest), so that a repaired disk
    /// is noticed by the next request rather than never.
    pub async fn check_writable(&self) -> Result<()> {
        if !self.failed.load(Ordering::Acquire) {
            return Ok(());
        }
        self.sign_head().await
    }

    /// Signs the head of the chain now (a digest committed to the log and to `head.json`), so that
    /// `head.json` covers every event acknowledged before the call.
    pub async fn sign_head(&self) -> Result<()> {
        let (ack, done) = tokio::sync::oneshot::channel();
        self.send(Cmd::Probe(ack))?;
        done.await
            .map_err(|_| AuditError::Unavailable("the audit writer stopped".into()))?
            .map_err(|e| AuditError::Unavailable(e.to_string()))
    }

    /// Why the last write failed, while writes are failing.
    pub fn failure(&self) -> Option<String> {
        if !self.failed.load(Ordering::Acquire) {
            return None;
        }
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Writes the closing digest of the current segment and stops the writer.
    pub async fn close(&self) -> Result<()> {
        let (ack, done) = tokio::sync::oneshot::channel();
        self.send(Cmd::Close(ack))?;
        let r = done
            .await
            .map_err(|_| AuditError::Unavailable("the audit writer stopped".into()))?;
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
        r
    }
}

fn set_private(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| AuditError::io(dir, e))
}

/// Segments grow by this much at a time (zeros, synced once), so that an ordinary group commit
/// overwrites allocated space and its `fdatasync` has no metadata to write. Smaller than a
/// record's maximum line, so a reader of a running segment sees at most one line of zeros.
const PREALLOCATE: u64 = 256 * 1024;

struct Writer {
    dir: PathBuf,
    signer: Arc<dyn DigestSigner>,
    key: String,
    options: AuditOptions,
    segment: u64,
    path: PathBuf,
    /// The open segment; `None` only while starting.
    file: Option<File>,
    /// File length after the last successful sync.
    synced_len: u64,
    /// Bytes of the open segment that exist on disk (written, zeros past `synced_len`): records
    /// are written over zeros so that `fdatasync` need not also write the inode.
    allocated_len: u64,
    /// Next record's seq, and the hash of the last record written.
    seq: u64,
    prev: String,
    /// Seq of the last record a digest covers, and when that digest was made.
    digested_seq: u64,
    digested_at: Instant,
    /// A digest in `buf`, written to `head.json` once the segment holds it on disk.
    pending_head: Option<Digest>,
    buf: Vec<u8>,
}

impl Writer {
    fn resume(dir: &Path, signer: Arc<dyn DigestSigner>, options: AuditOptions) -> Result<Writer> {
        let key = record::key_fingerprint(signer.public_key_der());
        let mut existing = segments(dir)?;
        let mut repaired = None;
        let mut tail: Option<(u64, PathBuf, u64, Record, String)> = None;
        while let Some(&n) = existing.last() {
            let path = dir.join(segment_name(n));
            let (len, last, torn) = scan_tail(&path)?;
            let on_disk = std::fs::metadata(&path)
                .map_err(|e| AuditError::io(&path, e))?
                .len();
            if on_disk > len {
                // Preallocated zeros, and any unfinished line before them.
                truncate(&path, len)?;
            }
            if torn > 0 {
                repaired = Some(torn);
                tracing::warn!(
                    segment = n,
                    bytes = torn,
                    "audit: removed an unfinished last line left by a crash (it was never acknowledged)"
                );
            }
            match last {
                Some((rec, hash)) => {
                    tail = Some((n, path, len, rec, hash));
                    break;
                }
                None => {
                    // Created but never written (a crash right after creation): nothing to keep.
                    std::fs::remove_file(&path).map_err(|e| AuditError::io(&path, e))?;
                    existing.pop();
                }
            }
        }
        let (segment, seq, prev) = match &tail {
            Some((n, _, _, rec, hash)) => (*n, rec.seq + 1, hash.clone()),
            None => (0, 1, GENESIS.to_owned()),
        };
        let mut w = Writer {
            dir: dir.to_owned(),
            signer,
            key,
            options,
            segment,
            path: dir.to_owned(),
            file: None,
            synced_len: 0,
            allocated_len: 0,
            seq,
            prev,
            digested_seq: 0,
            digested_at: Instant::now(),
            pending_head: None,
            buf: Vec::new(),
        };
        if let Some((n, path, len, rec, _)) = tail {
            let closed = matches!(&rec.body, RecordBody::Digest(d) if d.closes());
            if !closed {
                w.file = Some(
                    OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(|e| AuditError::io(&path, e))?,
                );
                w.path = path;
                w.segment = n;
                w.synced_len = len;
                w.allocated_len = len;
                w.push_digest("recovery")?;
                w.commit()?;
                w.finish_segment()?;
            }
        }
        w.open_segment("startup", repaired)?;
        Ok(w)
    }

    fn run(
        &mut self,
        rx: mpsc::Receiver<Cmd>,
        failed: Arc<AtomicBool>,
        last_error: Arc<Mutex<Option<String>>>,
    ) {
        loop {
            let first = match rx.recv_timeout(self.options.digest_interval) {
                Ok(c) => c,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if self.digested_seq + 1 < self.seq {
                        let r = self.push_digest("interval").and_then(|()| self.commit());
                        note(&failed, &last_error, &r);
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let _ = self.close();
                    return;
                }
            };
            let mut events = Vec::new();
            let mut probes = Vec::new();
            let mut close = None;
            let mut cmd = Some(first);
            while let Some(c) = cmd.take() {
                match c {
                    Cmd::Event(event, ack) => events.push((event, ack)),
                    Cmd::Probe(ack) => probes.push(ack),
                    Cmd::Close(ack) => {
                        close = Some(ack);
                        break;
                    }
                }
                if events.len() < 8192 {
                    cmd = rx.try_recv().ok();
                }
            }
            let (events, acks): (Vec<_>, Vec<_>) = events.into_iter().unzip();
            let r = self.ensure_segment().and_then(|()| {
                for event in events {
                    self.push_event(&event);
                }
                let due = self.digested_at.elapsed() >= self.options.digest_interval;
                if (!acks.is_empty() && due) || !probes.is_empty() {
                    self.push_digest("interval")?;
                }
                self.commit()
            });
            for ack in probes {
                let _ = ack.send(match &r {
                    Ok(()) => Ok(()),
                    Err(e) => Err(AuditError::Unavailable(e.to_string())),
                });
            }
            note(&failed, &last_error, &r);
            for ack in acks {
                let _ = ack.send(match &r {
                    Ok(()) => Ok(()),
                    Err(e) => Err(AuditError::Unavailable(e.to_string())),
                });
            }
            if r.is_ok() && self.synced_len >= self.options.segment_bytes {
                let r = self.rotate();
                note(&failed, &last_error, &r);
            }
            if let Some(ack) = close {
                let _ = ack.send(self.close());
                return;
            }
        }
    }

    fn push(&mut self, body: RecordBody) {
        let rec = Record {
            seq: self.seq,
            prev: std::mem::take(&mut self.prev),
            body,
        };
        let line = rec.to_line();
        self.prev = record::line_hash(&line);
        self.seq += 1;
        self.buf.extend_from_slice(&line);
        self.buf.push(b'\n');
    }

    /// Appends an event record, splicing the already serialised event into the record's line
    /// (the same bytes `Record` would write for it).
    fn push_event(&mut self, event: &[u8]) {
        let start = self.buf.len();
        let _ = write!(
            self.buf,
            "{{\"seq\":{},\"prev\":\"{}\",\"event\":",
            self.seq, self.prev
        );
        self.buf.extend_from_slice(event);
        self.buf.push(b'}');
        self.prev = record::line_hash(&self.buf[start..]);
        self.seq += 1;
        self.buf.push(b'\n');
    }

    fn push_digest(&mut self, reason: &str) -> Result<()> {
        let mut d = Digest {
            segment: self.segment,
            last_seq: self.seq - 1,
            chain: self.prev.clone(),
            time: record::now_rfc3339(),
            reason: reason.to_owned(),
            key: self.key.clone(),
            signature: String::new(),
        };
        let sig = self
            .signer
            .sign(&d.signed_bytes())
            .map_err(|e| AuditError::Unavailable(format!("cannot sign a digest: {e}")))?;
        d.signature = base64::engine::general_purpose::STANDARD.encode(sig);
        self.digested_seq = d.last_seq;
        self.digested_at = Instant::now();
        self.push(RecordBody::Digest(d.clone()));
        // head.json names the digest once the segment holds it (see `commit`): a head ahead of
        // the log on disk would read as records removed.
        self.pending_head = Some(d);
        Ok(())
    }

    /// Writes and syncs what is buffered, then `head.json` if a digest was buffered. On failure
    /// the file is cut back to its last synced length and the chain state rewound, so the next
    /// attempt continues a consistent chain.
    fn commit(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let Some(file) = self.file.as_mut() else {
            self.rewind()?;
            return Err(AuditError::Unavailable("no segment is open".into()));
        };
        let end = self.synced_len + self.buf.len() as u64;
        let mut r = Ok(());
        if end > self.allocated_len {
            // Extend with zeros, a chunk at a time; this sync also records the new length.
            let new_len = end.div_ceil(PREALLOCATE) * PREALLOCATE;
            let zeros = vec![0u8; (new_len - self.allocated_len) as usize];
            r = file.write_all_at(&zeros, self.allocated_len);
            if r.is_ok() {
                self.allocated_len = new_len;
            }
        }
        let r = r
            .and_then(|()| file.write_all_at(&self.buf, self.synced_len))
            .and_then(|()| file.sync_data());
        match r {
            Ok(()) => {
                self.synced_len = end;
                self.buf.clear();
                match self.pending_head.take() {
                    Some(d) => self.write_head(&d),
                    None => Ok(()),
                }
            }
            Err(e) => {
                let err = AuditError::io(&self.path, e);
                let _ = file.set_len(self.synced_len);
                self.allocated_len = self.synced_len;
                self.rewind()?;
                Err(err)
            }
        }
    }

    /// Cuts the preallocated zeros off a segment that is complete, so that closed segments end
    /// with their closing digest.
    fn finish_segment(&mut self) -> Result<()> {
        if let Some(file) = self.file.as_ref()
            && self.allocated_len > self.synced_len
        {
            file.set_len(self.synced_len)
                .and_then(|()| file.sync_all())
                .map_err(|e| AuditError::io(&self.path, e))?;
            self.allocated_len = self.synced_len;
        }
        Ok(())
    }

    /// Forgets buffered records: the chain continues from the last synced one.
    fn rewind(&mut self) -> Result<()> {
        self.pending_head = None;
        let text = std::mem::take(&mut self.buf);
        let first = text.split(|b| *b == b'\n').next().unwrap_or_default();
        if let Ok(rec) = Record::parse(first) {
            self.seq = rec.seq;
            self.prev = rec.prev;
        }
        Ok(())
    }

    fn rotate(&mut self) -> Result<()> {
        self.push_digest("close")?;
        self.commit()?;
        self.finish_segment()?;
        // Closed: nothing more goes into this segment, whether or not the next one opens now.
        self.file = None;
        self.open_segment("rotation", None)
    }

    /// Opens the next segment if the last attempt (after a rotation) failed.
    fn ensure_segment(&mut self) -> Result<()> {
        if self.file.is_some() {
            return Ok(());
        }
        self.open_segment("rotation", None)
    }

    fn close(&mut self) -> Result<()> {
        self.push_digest("close")?;
        self.commit()?;
        self.finish_segment()
    }

    fn open_segment(&mut self, reason: &str, repaired: Option<u64>) -> Result<()> {
        let next = self.segment + 1;
        let path = self.dir.join(segment_name(next));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| AuditError::io(&path, e))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| AuditError::io(&self.dir, e))?;
        self.file = Some(file);
        self.path = path;
        self.segment = next;
        self.synced_len = 0;
        self.allocated_len = 0;
        self.push(RecordBody::Start(Start {
            segment: next,
            time: record::now_rfc3339(),
            reason: reason.to_owned(),
            coffer_version: env!("CARGO_PKG_VERSION").to_owned(),
            repaired_torn_bytes: repaired,
        }));
        let r = self.commit();
        if r.is_err() {
            // Leave no segment without its start record; the next attempt creates it again.
            self.file = None;
            let _ = std::fs::remove_file(&self.path);
            self.segment = next - 1;
        }
        r
    }

    fn write_head(&self, d: &Digest) -> Result<()> {
        let path = self.dir.join(HEAD_FILE);
        let tmp = self.dir.join(".head.json.tmp");
        let text = serde_json::to_vec_pretty(d).unwrap_or_default();
        let write = || -> std::io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&text)?;
            f.sync_data()?;
            std::fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| AuditError::io(&path, e))
    }
}

fn note(failed: &AtomicBool, last_error: &Mutex<Option<String>>, r: &Result<()>) {
    match r {
        Ok(()) => failed.store(false, Ordering::Release),
        Err(e) => {
            tracing::error!(error = %e, "audit log write failed; audited requests are refused until it succeeds");
            *last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
            failed.store(true, Ordering::Release);
        }
    }
}

fn truncate(path: &Path, len: u64) -> Result<()> {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| AuditError::io(path, e))?;
    f.set_len(len).map_err(|e| AuditError::io(path, e))?;
    f.sync_all().map_err(|e| AuditError::io(path, e))
}

/// Reads a segment: its length up to the last complete line, that line's record and hash, and how
/// many bytes follow it without a newline (a torn write; preallocated zeros are not counted).
#[allow(clippy::type_complexity)]
fn scan_tail(path: &Path) -> Result<(u64, Option<(Record, String)>, u64)> {
    let mut data = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(|e| AuditError::io(path, e))?;
    // Written data ends at the first zero byte (the rest is preallocated space; records never
    // hold a raw zero byte), and at its last newline (the rest is a write cut short).
    let end = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    let complete = data[..end]
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    // Everything after it that is not zero was written but never acknowledged.
    let torn = data[complete..].iter().filter(|b| **b != 0).count() as u64;
    let body = &data[..complete];
    let last_line = body
        .strip_suffix(b"\n")
        .and_then(|b| b.split(|c| *c == b'\n').next_back());
    let last = match last_line {
        Some(line) if !line.is_empty() => {
            let rec = Record::parse(line).map_err(|e| {
                AuditError::Invalid(format!(
                    "the last record of {} cannot be read ({e}); run `coffer audit verify` to find out what happened",
                    path.display()
                ))
            })?;
            Some((rec, record::line_hash(line)))
        }
        _ => None,
    };
    Ok((complete as u64, last, torn))
}
