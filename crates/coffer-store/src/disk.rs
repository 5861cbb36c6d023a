//! Blobs on the local disk: `<root>/<first two hex digits of the id>/<id>`, written through
//! `<root>/tmp/<id>.partial` (fsync, rename, fsync of the directory).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::{BlobId, BlobStore, BlobWriter, Result, StoreError};

const TMP: &str = "tmp";
const PARTIAL: &str = ".partial";

fn io(what: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        what: what.display().to_string(),
        source,
    }
}

/// Blobs in a directory of the local disk.
#[derive(Debug)]
pub struct DiskBlobs {
    root: PathBuf,
    cipher: crate::Cipher,
}

/// The file that marks a blob directory made for the unencrypted benchmark baseline.
pub const BASELINE_MARKER: &str = "BENCHMARK-BASELINE-OBJECTS-ARE-NOT-ENCRYPTED";

impl DiskBlobs {
    /// Opens (creating, mode 0700) the blob directory `root`.
    pub fn open(root: &Path) -> Result<Self> {
        for dir in [root.to_path_buf(), root.join(TMP)] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(io(&dir))?;
        }
        if root.join(BASELINE_MARKER).exists() {
            return Err(StoreError::Io {
                what: root.display().to_string(),
                source: std::io::Error::other(
                    "this object directory was made for a benchmark baseline, whose objects are not encrypted; it cannot be served",
                ),
            });
        }
        Ok(Self {
            root: root.to_owned(),
            cipher: crate::Cipher::Seal,
        })
    }

    /// For `coffer bench s3` only: a store whose objects are copied, not sealed, to measure
    /// sealing against. It must be an empty, new directory, which is then marked so that it can
    /// never be opened as a real store.
    pub fn open_unencrypted_baseline(root: &Path) -> Result<Self> {
        let fresh = !root.exists() || fs::read_dir(root).map_err(io(root))?.next().is_none();
        if !fresh {
            return Err(StoreError::Io {
                what: root.display().to_string(),
                source: std::io::Error::other(
                    "the unencrypted benchmark baseline needs a new, empty object directory",
                ),
            });
        }
        let mut s = Self::open(root)?;
        fs::write(
            root.join(BASELINE_MARKER),
            b"coffer bench s3 baseline: not encrypted\n",
        )
        .map_err(io(root))?;
        s.cipher = crate::Cipher::CopyBaseline;
        Ok(s)
    }

    fn path(&self, id: &BlobId) -> PathBuf {
        self.root.join(&id.as_str()[..2]).join(id.as_str())
    }

    fn open_blob(&self, id: &BlobId) -> Result<File> {
        let path = self.path(id);
        File::open(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                StoreError::NotFound(id.to_string())
            } else {
                io(&path)(e)
            }
        })
    }
}

impl BlobStore for DiskBlobs {
    fn cipher(&self) -> crate::Cipher {
        self.cipher
    }

    fn create(&self) -> Result<Box<dyn BlobWriter>> {
        let id = BlobId::new_random();
        let tmp = self.root.join(TMP).join(format!("{id}{PARTIAL}"));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        Ok(Box::new(DiskWriter {
            file: Some(std::io::BufWriter::with_capacity(256 * 1024, file)),
            tmp,
            dest: self.path(&id),
            id,
        }))
    }

    fn read_at(&self, id: &BlobId, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut f = self.open_blob(id)?;
        let path = self.path(id);
        f.seek(SeekFrom::Start(offset)).map_err(io(&path))?;
        let mut out = vec![0u8; len];
        f.read_exact(&mut out).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                StoreError::Damaged(id.to_string())
            } else {
                io(&path)(e)
            }
        })?;
        Ok(out)
    }

    fn len(&self, id: &BlobId) -> Result<u64> {
        let path = self.path(id);
        Ok(self.open_blob(id)?.metadata().map_err(io(&path))?.len())
    }

    fn delete(&self, id: &BlobId) -> Result<bool> {
        let path = self.path(id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io(&path)(e)),
        }
    }

    fn list(&self) -> Result<Vec<BlobId>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.root).map_err(io(&self.root))? {
            let entry = entry.map_err(io(&self.root))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.len() != 2 || !entry.path().is_dir() {
                continue;
            }
            for blob in fs::read_dir(entry.path()).map_err(io(&entry.path()))? {
                let blob = blob.map_err(io(&entry.path()))?;
                if let Some(id) = BlobId::parse(&blob.file_name().to_string_lossy()) {
                    out.push(id);
                }
            }
        }
        Ok(out)
    }

    fn clean_temporary(&self) -> Result<usize> {
        let dir = self.root.join(TMP);
        let mut n = 0;
        for entry in fs::read_dir(&dir).map_err(io(&dir))? {
            let entry = entry.map_err(io(&dir))?;
            if entry.file_name().to_string_lossy().ends_with(PARTIAL) {
                fs::remove_file(entry.path()).map_err(io(&entry.path()))?;
                n += 1;
            }
        }
        Ok(n)
    }
}

struct DiskWriter {
    /// `None` once committed.
    file: Option<std::io::BufWriter<File>>,
    tmp: PathBuf,
    dest: PathBuf,
    id: BlobId,
}

impl BlobWriter for DiskWriter {
    fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        match self.file.as_mut() {
            Some(f) => f.write_all(bytes).map_err(io(&self.tmp)),
            None => Ok(()),
        }
    }

    fn commit(mut self: Box<Self>) -> Result<BlobId> {
        let Some(file) = self.file.take() else {
            return Ok(self.id.clone());
        };
        let (tmp, dest) = (self.tmp.clone(), self.dest.clone());
        let file = file.into_inner().map_err(|e| io(&tmp)(e.into_error()))?;
        file.sync_all().map_err(io(&tmp))?;
        drop(file);
        let dir = dest.parent().unwrap_or(Path::new("."));
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir))?;
        fs::rename(&tmp, &dest).map_err(io(&dest))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
        Ok(self.id.clone())
    }
}

impl Drop for DiskWriter {
    fn drop(&mut self) {
        // An abandoned write (an error, a dropped request) leaves nothing behind.
        if self.file.is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}
