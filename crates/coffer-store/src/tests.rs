use super::*;

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

fn store() -> (tempfile::TempDir, DiskBlobs) {
    let dir = tempfile::tempdir().expect("tmp");
    let blobs = DiskBlobs::open(&dir.path().join("blobs")).expect("open");
    (dir, blobs)
}

fn read_all(blobs: &dyn BlobStore, key: &Key256, id: &BlobId) -> Result<Vec<u8>> {
    let r = ObjectReader::open(blobs, id)?;
    let mut out = Vec::new();
    r.read_all(key, &mut |b| {
        out.extend_from_slice(b);
        Ok(())
    })?;
    Ok(out)
}

#[test]
fn objects_round_trip_with_s3_etags_and_nothing_readable_on_disk() {
    let (dir, blobs) = store();
    let key = Key256::generate().expect("rng");
    for len in [0, 5, PACKAGE_LEN, 3 * PACKAGE_LEN + 17] {
        let data = pattern(len);
        let w = write_object(&blobs, &key, len as u64, &mut &data[..]).expect("write");
        assert_eq!(w.md5, coffer_crypto::digest::md5(&data));
        assert_eq!(read_all(&blobs, &key, &w.blob).expect("read"), data);
    }
    // A recognisable plaintext never reaches the disk.
    let marker = b"COFFER-PLAINTEXT-MARKER-".repeat(5000);
    write_object(&blobs, &key, marker.len() as u64, &mut &marker[..]).expect("write");
    for entry in walk(dir.path()) {
        let content = std::fs::read(&entry).expect("read");
        assert!(
            !content
                .windows(24)
                .any(|w| w == b"COFFER-PLAINTEXT-MARKER-"),
            "{} holds plaintext",
            entry.display()
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn ranges_read_only_what_they_need() {
    let (_dir, blobs) = store();
    let key = Key256::generate().expect("rng");
    let data = pattern(3 * PACKAGE_LEN + 100);
    let w = write_object(&blobs, &key, data.len() as u64, &mut &data[..]).expect("write");
    let r = ObjectReader::open(&blobs, &w.blob).expect("open");
    for (first, last) in [
        (0u64, 0u64),
        (PACKAGE_LEN as u64 - 1, PACKAGE_LEN as u64),
        (10, 2 * PACKAGE_LEN as u64 + 5),
        (data.len() as u64 - 1, data.len() as u64 - 1),
    ] {
        let mut got = Vec::new();
        r.read_range(&key, first, last, &mut |b| {
            got.extend_from_slice(b);
            Ok(())
        })
        .expect("range");
        assert_eq!(got, &data[first as usize..=last as usize]);
    }
    assert!(matches!(
        r.read_range(&key, 0, data.len() as u64, &mut |_| Ok(())),
        Err(StoreError::InvalidRange { .. })
    ));
}

#[test]
fn a_flipped_or_cut_byte_on_disk_never_reads_as_data() {
    let (dir, blobs) = store();
    let key = Key256::generate().expect("rng");
    let data = pattern(2 * PACKAGE_LEN + 3);
    let w = write_object(&blobs, &key, data.len() as u64, &mut &data[..]).expect("write");
    let path = dir
        .path()
        .join("blobs")
        .join(&w.blob.as_str()[..2])
        .join(w.blob.as_str());
    let original = std::fs::read(&path).expect("read");
    for at in [3, 20, PACKAGE_LEN + 40, original.len() - 1] {
        let mut t = original.clone();
        t[at] ^= 0x20;
        std::fs::write(&path, &t).expect("write");
        let mut handed = 0usize;
        let r = ObjectReader::open(&blobs, &w.blob).and_then(|r| {
            r.read_all(&key, &mut |b| {
                handed += b.len();
                Ok(())
            })
        });
        assert!(matches!(r, Err(StoreError::Damaged(_))), "flip at {at}");
        // Packages before the damaged one may have been handed over; never the damaged one.
        assert!(handed <= (at.saturating_sub(HEADER_LEN) / (PACKAGE_LEN + 16)) * PACKAGE_LEN);
    }
    std::fs::write(&path, &original[..original.len() - 1]).expect("write");
    assert!(matches!(
        ObjectReader::open(&blobs, &w.blob),
        Err(StoreError::Damaged(_))
    ));
    let other = Key256::generate().expect("rng");
    std::fs::write(&path, &original).expect("write");
    assert!(matches!(
        read_all(&blobs, &other, &w.blob),
        Err(StoreError::Damaged(_))
    ));
}

#[test]
fn wrong_lengths_and_abandoned_writes_leave_nothing() {
    let (dir, blobs) = store();
    let key = Key256::generate().expect("rng");
    let data = pattern(100);
    assert!(matches!(
        write_object(&blobs, &key, 99, &mut &data[..]),
        Err(StoreError::LengthMismatch { .. })
    ));
    assert!(matches!(
        write_object(&blobs, &key, 101, &mut &data[..]),
        Err(StoreError::LengthMismatch { .. })
    ));
    // Nothing visible, nothing temporary.
    let files = walk(dir.path());
    assert!(files.is_empty(), "left behind: {files:?}");
    // A crash mid-write leaves a temporary file, which a start removes.
    std::fs::write(
        dir.path().join("blobs").join("tmp").join("x.partial"),
        b"half",
    )
    .expect("write");
    assert_eq!(blobs.clean_temporary().expect("clean"), 1);
    assert!(walk(dir.path()).is_empty());
}

#[test]
fn blob_ids_cannot_name_other_paths() {
    assert!(BlobId::parse("../../etc/passwd").is_none());
    assert!(BlobId::parse("ABCDEF0123456789ABCDEF0123456789").is_none());
    let id = BlobId::new_random();
    assert_eq!(BlobId::parse(id.as_str()), Some(id.clone()));
    let (_dir, blobs) = store();
    assert!(matches!(
        blobs.read_at(&id, 0, 1),
        Err(StoreError::NotFound(_))
    ));
    assert!(!blobs.delete(&id).expect("delete"));
}
