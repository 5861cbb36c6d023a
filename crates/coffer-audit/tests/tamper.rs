//! The log detects and locates every kind of tampering, survives crashes, and fails closed.

use std::path::Path;
use std::sync::Arc;

use coffer_audit::{AuditLog, AuditOptions, DigestSigner, segment_name, verify};
use coffer_crypto::keys::{self, KeyMaterial, KeySpec, MessageType, SigningAlgorithm};
use serde_json::json;

#[derive(Debug)]
struct Signer {
    key: KeyMaterial,
    public: Vec<u8>,
}

impl Signer {
    fn new() -> Arc<Signer> {
        let stored = keys::generate(KeySpec::EccNistP384).expect("generate");
        let key = KeyMaterial::load(KeySpec::EccNistP384, stored.expose()).expect("load");
        let public = key.public_key_der().expect("public");
        Arc::new(Signer { key, public })
    }
}

impl DigestSigner for Signer {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        self.key
            .sign(SigningAlgorithm::EcdsaSha384, message, MessageType::Raw)
            .map_err(|e| e.to_string())
    }
    fn public_key_der(&self) -> &[u8] {
        &self.public
    }
}

/// Small segments; digests only where a test asks for one, so a log's layout does not depend
/// on how fast the machine is.
fn small() -> AuditOptions {
    AuditOptions {
        segment_bytes: 2048,
        digest_interval: std::time::Duration::from_secs(3600),
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A closed log of `n` events over several segments.
fn make_log(dir: &Path, signer: &Arc<Signer>, n: usize) {
    rt().block_on(async {
        let log = AuditLog::open(dir, signer.clone(), small()).expect("open");
        for i in 0..n {
            log.record(json!({"eventName": "Encrypt", "eventTime": "2026-11-22T10:00:00Z", "requestID": format!("r{i}")}).to_string().into_bytes())
                .await
                .expect("record");
            if i % 7 == 0 {
                // An interval digest, signed now.
                log.sign_head().await.expect("digest");
            }
        }
        log.close().await.expect("close");
    });
}

/// The event of request `i`, as the server hands it to the log.
fn encrypt_event(i: usize) -> Vec<u8> {
    json!({"eventName": "Encrypt", "requestID": format!("r{i}")})
        .to_string()
        .into_bytes()
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .expect("read")
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).expect("write");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("list") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
    }
}

/// Verifies the log in `dir`, which must be intact; returns the report.
fn intact(dir: &Path, signer: &Signer) -> coffer_audit::VerifyReport {
    let report = verify::verify(dir, &signer.public).expect("verify runs");
    assert!(report.ok(), "{}: {:?}", dir.display(), report.problem);
    report
}

fn broken(dir: &Path, signer: &Signer) -> coffer_audit::Break {
    let report = verify::verify(dir, &signer.public).expect("verify runs");
    report.problem.expect("tampering must be detected")
}

#[test]
fn an_intact_log_verifies() {
    let tmp = tempfile::tempdir().expect("tmp");
    let signer = Signer::new();
    make_log(tmp.path(), &signer, 40);
    let report = intact(tmp.path(), &signer);
    assert!(report.segments >= 3, "{report:?}");
    assert_eq!(report.events, 40);
    assert!(report.head_checked && !report.open);
    // Another key does not verify it.
    let other = Signer::new();
    let b = broken(tmp.path(), &other);
    assert!(b.message.contains("not by the audit key"), "{b}");
}

#[test]
fn every_kind_of_tampering_is_located() {
    let signer = Signer::new();
    let original = tempfile::tempdir().expect("tmp");
    make_log(original.path(), &signer, 40);
    let seg = |d: &Path, n: u64| d.join(segment_name(n));

    let case = |name: &str, tamper: &dyn Fn(&Path)| -> coffer_audit::Break {
        let t = tempfile::tempdir().expect("tmp");
        copy_dir(original.path(), t.path());
        tamper(t.path());
        let b = broken(t.path(), &signer);
        eprintln!("{name}: {b}");
        b
    };

    // A changed byte in an event of segment 2, line 3.
    let b = case("modify", &|d| {
        let mut l = lines(&seg(d, 2));
        l[2] = l[2].replacen("Encrypt", "Decrypt", 1);
        write_lines(&seg(d, 2), &l);
    });
    assert_eq!((b.segment, b.line), (2, 4), "{b}");
    assert!(b.message.contains("was altered"), "{b}");

    let b = case("delete a record", &|d| {
        let mut l = lines(&seg(d, 2));
        l.remove(2);
        write_lines(&seg(d, 2), &l);
    });
    assert_eq!((b.segment, b.line), (2, 3), "{b}");
    assert!(b.message.contains("removed"), "{b}");

    let b = case("insert a record", &|d| {
        let mut l = lines(&seg(d, 2));
        let copy = l[1].clone();
        l.insert(3, copy);
        write_lines(&seg(d, 2), &l);
    });
    assert_eq!((b.segment, b.line), (2, 4), "{b}");
    assert!(b.message.contains("inserted"), "{b}");

    let b = case("swap two records", &|d| {
        let mut l = lines(&seg(d, 2));
        l.swap(2, 3);
        write_lines(&seg(d, 2), &l);
    });
    assert_eq!((b.segment, b.line), (2, 3), "{b}");

    let b = case("truncate the tail", &|d| {
        let last = coffer_audit::segments(d)
            .expect("segments")
            .pop()
            .expect("one");
        let mut l = lines(&seg(d, last));
        l.truncate(l.len() - 2);
        write_lines(&seg(d, last), &l);
    });
    assert!(b.message.contains("were removed"), "{b}");

    let b = case("delete a middle segment", &|d| {
        std::fs::remove_file(seg(d, 2)).expect("rm");
    });
    assert_eq!((b.segment, b.line), (2, 0), "{b}");
    assert!(b.message.contains("deleted"), "{b}");

    let b = case("delete the newest segment", &|d| {
        let last = coffer_audit::segments(d)
            .expect("segments")
            .pop()
            .expect("one");
        std::fs::remove_file(seg(d, last)).expect("rm");
    });
    assert!(
        b.message.contains("newest segment deleted") || b.message.contains("were removed"),
        "{b}"
    );

    let b = case("cut the end of a closed segment", &|d| {
        let mut l = lines(&seg(d, 1));
        l.pop();
        write_lines(&seg(d, 1), &l);
    });
    assert_eq!(b.segment, 1, "{b}");

    let b = case("forge a digest", &|d| {
        let mut l = lines(&seg(d, 1));
        let i = l
            .iter()
            .position(|x| x.contains("\"digest\""))
            .expect("a digest");
        l[i] = l[i].replacen("\"reason\":\"interval\"", "\"reason\":\"intervaL\"", 1);
        write_lines(&seg(d, 1), &l);
    });
    assert_eq!(b.segment, 1, "{b}");

    let b = case("alter head.json", &|d| {
        let text = std::fs::read_to_string(d.join("head.json")).expect("head");
        assert!(text.contains("\"close\""), "{text}");
        std::fs::write(
            d.join("head.json"),
            text.replacen("\"close\"", "\"clos3\"", 1),
        )
        .expect("write");
    });
    assert!(b.message.contains("head.json"), "{b}");
}

#[test]
fn digests_are_signed_while_events_pause() {
    let signer = Signer::new();
    let tmp = tempfile::tempdir().expect("tmp");
    let options = AuditOptions {
        segment_bytes: 1 << 20,
        digest_interval: std::time::Duration::from_millis(50),
    };
    rt().block_on(async {
        let log = AuditLog::open(tmp.path(), signer.clone(), options).expect("open");
        log.record(json!({"eventName": "Encrypt"}).to_string().into_bytes())
            .await
            .expect("record");
        // No further event: the writer's timer alone must sign the chain.
        let seg1 = tmp.path().join(segment_name(1));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !std::fs::read_to_string(&seg1)
            .expect("read")
            .contains("\"reason\":\"interval\"")
        {
            assert!(
                std::time::Instant::now() < deadline,
                "no interval digest after 30 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        log.close().await.expect("close");
    });
    intact(tmp.path(), &signer);
}

#[test]
fn a_crash_never_leaves_the_signed_head_ahead_of_the_log() {
    // What a kill -9 leaves at any moment is head.json, then the segments as they are a moment
    // later. Events are written with a digest due in every group while copies are taken this
    // way; every copy must verify (as an open log), which it cannot if head.json ever covers
    // records before the segment holds them.
    let signer = Signer::new();
    let live = tempfile::tempdir().expect("tmp");
    let snaps = tempfile::tempdir().expect("tmp");
    let options = AuditOptions {
        segment_bytes: 1 << 20,
        digest_interval: std::time::Duration::from_millis(1),
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    let copies = std::thread::scope(|s| {
        let taker = s.spawn(|| {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                let Ok(head) = std::fs::read(live.path().join("head.json")) else {
                    continue;
                };
                let to = snaps.path().join(n.to_string());
                std::fs::create_dir_all(&to).expect("mkdir");
                std::fs::write(to.join("head.json"), head).expect("write");
                for e in std::fs::read_dir(live.path()).expect("list") {
                    let e = e.expect("entry");
                    let name = e.file_name();
                    if name.to_string_lossy().starts_with("segment-") {
                        std::fs::copy(e.path(), to.join(name)).expect("copy");
                    }
                }
                n += 1;
            }
            n
        });
        rt().block_on(async {
            let log = AuditLog::open(live.path(), signer.clone(), options).expect("open");
            for i in 0..60 {
                log.record(encrypt_event(i)).await.expect("record");
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            stop.store(true, std::sync::atomic::Ordering::Release);
            log.close().await.expect("close");
        });
        taker.join().expect("snapshots")
    });
    assert!(copies > 10, "only {copies} copies were taken");
    // Checking each copy's signatures is what takes time: at most 200 copies, spread evenly.
    let step = (copies as usize).div_ceil(200);
    for n in (0..copies).step_by(step) {
        intact(&snaps.path().join(n.to_string()), &signer);
    }
}

#[test]
fn a_crash_leaves_a_log_that_verifies_after_restart() {
    let signer = Signer::new();
    let live = tempfile::tempdir().expect("tmp");
    let snapshot = tempfile::tempdir().expect("tmp");
    rt().block_on(async {
        let log =
            AuditLog::open(live.path(), signer.clone(), AuditOptions::default()).expect("open");
        for i in 0..5 {
            log.record(encrypt_event(i)).await.expect("record");
        }
        // What is on disk now is what a kill -9 leaves: acknowledged events, no closing digest.
        copy_dir(live.path(), snapshot.path());
        log.close().await.expect("close");
    });
    // Plus half a line written over the preallocated zeros, as a crash in the middle of a write
    // leaves.
    let seg1 = snapshot.path().join(segment_name(1));
    let mut text = std::fs::read(&seg1).expect("read");
    let end = text.iter().position(|b| *b == 0).unwrap_or(text.len());
    let torn = br#"{"seq":7,"prev":"00"#;
    if text.len() < end + torn.len() {
        text.resize(end + torn.len(), 0);
    }
    text[end..end + torn.len()].copy_from_slice(torn);
    std::fs::write(&seg1, text).expect("write");
    rt().block_on(async {
        let log = AuditLog::open(snapshot.path(), signer.clone(), AuditOptions::default())
            .expect("reopen");
        log.record(json!({"eventName": "Decrypt"}).to_string().into_bytes())
            .await
            .expect("record");
        log.close().await.expect("close");
    });
    let report = intact(snapshot.path(), &signer);
    assert_eq!(report.events, 6);
    let seg2 = std::fs::read_to_string(snapshot.path().join(segment_name(2))).expect("read");
    assert!(seg2.contains("\"repairedTornBytes\":19"), "{seg2}");
    let seg1 = std::fs::read_to_string(&seg1).expect("read");
    assert!(seg1.contains("\"reason\":\"recovery\""), "{seg1}");
}

#[test]
fn writes_that_fail_are_refused_and_the_log_recovers() {
    let signer = Signer::new();
    let tmp = tempfile::tempdir().expect("tmp");
    rt().block_on(async {
        let log = AuditLog::open(tmp.path(), signer.clone(), small()).expect("open");
        // The next segment's name is taken by something that is not ours: rotation cannot
        // create it, so events after the rotation cannot be written.
        std::os::unix::fs::symlink("/dev/full", tmp.path().join(segment_name(2))).expect("symlink");
        let mut refused = None;
        for i in 0..200 {
            if let Err(e) = log.record(encrypt_event(i)).await {
                refused = Some(e);
                break;
            }
        }
        let e = refused.expect("a write must fail once the segment is full");
        assert!(e.to_string().contains("segment-00000002.log"), "{e}");
        assert!(log.failure().is_some());
        std::fs::remove_file(tmp.path().join(segment_name(2))).expect("rm");
        log.record(json!({"eventName": "Decrypt"}).to_string().into_bytes())
            .await
            .expect("recovered");
        assert!(log.failure().is_none());
        log.close().await.expect("close");
    });
    intact(tmp.path(), &signer);
}
