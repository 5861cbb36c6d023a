//! The object store's metadata.

use async_trait::async_trait;

use super::{change_or_not_found, page};
use crate::changes::{Change, notify};
use crate::objects::{
    BucketAttr, BucketRecord, ListQuery, NULL_VERSION, ObjectMeta, ObjectRecord, PartRef,
    SseRecord, UploadPartRecord, UploadRecord,
};
use crate::sql::{Dialect, Row, SqlStore, Tx, now_ms, p};
use crate::{MetaError, Page, Result};

const BUCKET_COLUMNS: &str = "name, owner_account, region, created_ms, versioning";

fn bucket_row(r: &Row) -> Result<BucketRecord> {
    Ok(BucketRecord {
        name: r.get(0)?,
        owner_account: r.get(1)?,
        region: r.get(2)?,
        created_ms: r.get(3)?,
        versioning: r.get(4)?,
    })
}

const OBJECT_COLUMNS: &str = "bucket, key, version_id, is_latest, delete_marker, size, etag, \
    last_modified_ms, blob, sse_mode, sealed_key, sse_key_id, sse_context, sse_key_check, bucket_key, \
    attrs, tags";

fn object_row(r: &Row) -> Result<ObjectRecord> {
    Ok(ObjectRecord {
        bucket: r.get(0)?,
        key: r.get(1)?,
        version_id: r.get(2)?,
        is_latest: r.get(3)?,
        delete_marker: r.get(4)?,
        size: r.get(5)?,
        etag: r.get(6)?,
        last_modified_ms: r.get(7)?,
        blob: r.get(8)?,
        parts: Vec::new(),
        sse: SseRecord {
            mode: r.get(9)?,
            sealed_key: r.get(10)?,
            key_id: r.get(11)?,
            context: r.get(12)?,
            key_check: r.get(13)?,
            bucket_key: r.get(14)?,
        },
        attrs: r.get(15)?,
        tags: r.get(16)?,
    })
}

/// Whether the statement finds any row.
fn exists(t: &mut dyn Tx, sql: &str, params: &[crate::sql::Value]) -> Result<bool> {
    Ok(!t.query(sql, params)?.is_empty())
}

fn bucket_exists(t: &mut dyn Tx, name: &str) -> Result<bool> {
    exists(t, "SELECT 1 FROM s3_buckets WHERE name = ?1", &p![name])
}

fn upload_exists(t: &mut dyn Tx, upload_id: &str) -> Result<bool> {
    exists(
        t,
        "SELECT 1 FROM s3_uploads WHERE upload_id = ?1",
        &p![upload_id],
    )
}

/// Puts `blob` on the garbage list.
fn discard(t: &mut dyn Tx, blob: Option<&str>) -> Result<()> {
    if let Some(b) = blob {
        t.execute(
            "INSERT INTO s3_garbage (blob, since_ms) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            &p![b, now_ms()],
        )?;
    }
    Ok(())
}

/// Makes the newest remaining version of a key its latest.
fn promote_newest(t: &mut dyn Tx, bucket: &str, key: &str) -> Result<()> {
    t.execute(
        "UPDATE s3_objects SET is_latest = 1 WHERE bucket = ?1 AND key = ?2 AND seq = \
         (SELECT MAX(seq) FROM s3_objects WHERE bucket = ?1 AND key = ?2)",
        &p![bucket, key],
    )?;
    Ok(())
}

/// A multipart object's parts, in order.
fn load_parts(t: &mut dyn Tx, bucket: &str, key: &str, version: &str) -> Result<Vec<PartRef>> {
    t.query_map(
        "SELECT part_number, size, blob FROM s3_object_parts WHERE bucket = ?1 AND key = ?2 \
         AND version_id = ?3 ORDER BY part_number",
        &p![bucket, key, version],
        |r| {
            Ok(PartRef {
                part_number: r.get(0)?,
                size: r.get(1)?,
                blob: r.get(2)?,
            })
        },
    )
}

/// Removes one version (and its parts), putting every blob it named on the garbage list.
fn remove_version(
    t: &mut dyn Tx,
    bucket: &str,
    key: &str,
    version: &str,
    garbage: &mut Vec<String>,
) -> Result<Option<ObjectRecord>> {
    let old = t.query_opt(
        &format!(
            "SELECT {OBJECT_COLUMNS} FROM s3_objects WHERE bucket = ?1 AND key = ?2 AND version_id = ?3"
        ),
        &p![bucket, key, version],
        object_row,
    )?;
    let Some(mut old) = old else {
        return Ok(None);
    };
    old.parts = load_parts(t, bucket, key, version)?;
    t.execute(
        "DELETE FROM s3_objects WHERE bucket = ?1 AND key = ?2 AND version_id = ?3",
        &p![bucket, key, version],
    )?;
    for b in old.blob.iter().chain(old.parts.iter().map(|p| &p.blob)) {
        discard(t, Some(b))?;
        garbage.push(b.clone());
    }
    Ok(Some(old))
}

/// Adds an object version (and its parts) as the latest; see [`ObjectMeta::put_object`].
fn insert_object(
    t: &mut dyn Tx,
    o: &ObjectRecord,
    replace_null: bool,
    garbage: &mut Vec<String>,
) -> Result<()> {
    if !bucket_exists(t, &o.bucket)? {
        return Err(MetaError::NotFound(o.bucket.clone()));
    }
    if replace_null || o.version_id == NULL_VERSION {
        remove_version(t, &o.bucket, &o.key, NULL_VERSION, garbage)?;
    }
    t.execute(
        "UPDATE s3_objects SET is_latest = 0 WHERE bucket = ?1 AND key = ?2 AND is_latest = 1",
        &p![o.bucket, o.key],
    )?;
    // The order of versions. SQLite has one writer; on PostgreSQL a sequence keeps concurrent
    // writers of different keys from conflicting over MAX(seq).
    let seq: i64 = match t.dialect() {
        Dialect::Sqlite => {
            t.query_scalar("SELECT COALESCE(MAX(seq), 0) + 1 FROM s3_objects", &[])?
        }
        Dialect::Postgres => t.query_scalar("SELECT nextval('s3_object_seq')", &[])?,
    };
    let n = t
        .execute(
            &format!(
                "INSERT INTO s3_objects ({OBJECT_COLUMNS}, seq) VALUES \
             (?1, ?2, ?3, 1, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17) \
             ON CONFLICT (bucket, key, version_id) DO NOTHING"
            ),
            &p![
                o.bucket,
                o.key,
                o.version_id,
                o.delete_marker,
                o.size as i64,
                o.etag,
                o.last_modified_ms,
                o.blob,
                o.sse.mode,
                o.sse.sealed_key,
                o.sse.key_id,
                o.sse.context,
                o.sse.key_check,
                o.sse.bucket_key,
                o.attrs,
                o.tags,
                seq
            ],
        )
        // The bucket went (deleted on another node) after the check above.
        .map_err(|e| e.foreign_key_as(|| MetaError::NotFound(o.bucket.clone())))?;
    if n == 0 {
        return Err(MetaError::AlreadyExists(format!(
            "{}/{} version {}",
            o.bucket, o.key, o.version_id
        )));
    }
    for part in &o.parts {
        t.execute(
            "INSERT INTO s3_object_parts (bucket, key, version_id, part_number, size, blob) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            &p![
                o.bucket,
                o.key,
                o.version_id,
                part.part_number,
                part.size as i64,
                part.blob
            ],
        )?;
    }
    Ok(())
}

const UPLOAD_COLUMNS: &str = "upload_id, bucket, key, initiated_ms, sse_mode, sealed_key, sse_key_id, \
    sse_context, sse_key_check, bucket_key, attrs, tags";

fn upload_row(r: &Row) -> Result<UploadRecord> {
    Ok(UploadRecord {
        upload_id: r.get(0)?,
        bucket: r.get(1)?,
        key: r.get(2)?,
        initiated_ms: r.get(3)?,
        sse: SseRecord {
            mode: r.get(4)?,
            sealed_key: r.get(5)?,
            key_id: r.get(6)?,
            context: r.get(7)?,
            key_check: r.get(8)?,
            bucket_key: r.get(9)?,
        },
        attrs: r.get(10)?,
        tags: r.get(11)?,
    })
}

/// Removes an upload and its parts, putting the parts' blobs (but those in `keep`) on the
/// garbage list.
fn remove_upload(
    t: &mut dyn Tx,
    upload_id: &str,
    keep: &[String],
    garbage: &mut Vec<String>,
) -> Result<()> {
    let blobs: Vec<String> = t.query_map(
        "SELECT blob FROM s3_upload_parts WHERE upload_id = ?1",
        &p![upload_id],
        |r| r.get(0),
    )?;
    for b in blobs {
        if !keep.contains(&b) {
            discard(t, Some(&b))?;
            garbage.push(b);
        }
    }
    t.execute(
        "DELETE FROM s3_uploads WHERE upload_id = ?1",
        &p![upload_id],
    )?;
    Ok(())
}

/// What writers of one object key serialise on.
fn object_lock(bucket: &str, key: &str) -> String {
    // Bucket names hold no "/".
    format!("s3-object:{bucket}/{key}")
}

/// The smallest string greater than every string starting with `prefix`, if there is one.
fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(c) = chars.pop() {
        if let Some(next) = (c as u32)
            .checked_add(1)
            .and_then(char::from_u32)
            .or_else(|| (c as u32 == 0xD7FF).then_some('\u{E000}'))
        {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[async_trait]
impl ObjectMeta for SqlStore {
    async fn s3_master_key(&self) -> Result<Option<(u32, Vec<u8>)>> {
        self.read(|t| {
            t.query_opt(
                "SELECT id, wrapped FROM s3_master_keys ORDER BY id DESC LIMIT 1",
                &[],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
        .await
    }

    async fn create_s3_master_key(&self, id: u32, wrapped: &[u8]) -> Result<()> {
        let wrapped = wrapped.to_vec();
        self.tx(move |t| {
            let n = t.execute(
                "INSERT INTO s3_master_keys (id, wrapped, created_ms) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                &p![id, wrapped, now_ms()],
            )?;
            if n == 0 {
                return Err(MetaError::AlreadyExists(format!("S3 master key {id}")));
            }
            Ok(())
        })
        .await
    }

    async fn create_bucket(&self, b: &BucketRecord) -> Result<()> {
        let b = b.clone();
        self.tx(move |t| {
            let n = t.execute(
                &format!(
                    "INSERT INTO s3_buckets ({BUCKET_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING"
                ),
                &p![b.name, b.owner_account, b.region, b.created_ms, b.versioning],
            )?;
            if n == 0 {
                return Err(MetaError::AlreadyExists(b.name.clone()));
            }
            Ok(())
        })
        .await
    }

    async fn bucket(&self, name: &str) -> Result<Option<BucketRecord>> {
        let name = name.to_owned();
        self.read(move |t| {
            t.query_opt(
                &format!("SELECT {BUCKET_COLUMNS} FROM s3_buckets WHERE name = ?1"),
                &p![name],
                bucket_row,
            )
        })
        .await
    }

    async fn list_buckets(&self) -> Result<Vec<BucketRecord>> {
        self.read(|t| {
            t.query_map(
                &format!("SELECT {BUCKET_COLUMNS} FROM s3_buckets ORDER BY name"),
                &[],
                bucket_row,
            )
        })
        .await
    }

    async fn delete_bucket(&self, name: &str) -> Result<()> {
        let name = name.to_owned();
        self.tx(move |t| {
            if !bucket_exists(t, &name)? {
                return Err(MetaError::NotFound(name.clone()));
            }
            if exists(
                t,
                "SELECT 1 FROM s3_objects WHERE bucket = ?1 LIMIT 1",
                &p![name],
            )? {
                return Err(MetaError::InUse(name.clone()));
            }
            // Unfinished multipart uploads go with the bucket.
            let uploads: Vec<String> = t.query_map(
                "SELECT upload_id FROM s3_uploads WHERE bucket = ?1",
                &p![name],
                |r| r.get(0),
            )?;
            let mut garbage = Vec::new();
            for u in &uploads {
                remove_upload(t, u, &[], &mut garbage)?;
            }
            // An object another node is writing into it right now holds the bucket too.
            t.execute("DELETE FROM s3_buckets WHERE name = ?1", &p![name])
                .map_err(|e| e.foreign_key_as(|| MetaError::InUse(name.clone())))?;
            notify(t, Change::Bucket(name.clone()))
        })
        .await
    }

    async fn set_bucket_versioning(&self, name: &str, state: &str) -> Result<()> {
        let (name, state) = (name.to_owned(), state.to_owned());
        self.tx(move |t| {
            change_or_not_found(
                t,
                "UPDATE s3_buckets SET versioning = ?1 WHERE name = ?2",
                &p![state, name],
                &name,
            )?;
            notify(t, Change::Bucket(name.clone()))
        })
        .await
    }

    async fn bucket_attr(&self, name: &str, attr: BucketAttr) -> Result<Option<String>> {
        let name = name.to_owned();
        self.read(move |t| {
            t.query_opt(
                &format!("SELECT {} FROM s3_buckets WHERE name = ?1", attr.column()),
                &p![name],
                |r| r.get::<Option<String>>(0),
            )
            .map(Option::flatten)
        })
        .await
    }

    async fn set_bucket_attr(
        &self,
        name: &str,
        attr: BucketAttr,
        value: Option<&str>,
    ) -> Result<()> {
        let (name, value) = (name.to_owned(), value.map(str::to_owned));
        self.tx(move |t| {
            change_or_not_found(
                t,
                &format!(
                    "UPDATE s3_buckets SET {} = ?1 WHERE name = ?2",
                    attr.column()
                ),
                &p![value, name],
                &name,
            )?;
            notify(t, Change::Bucket(name.clone()))
        })
        .await
    }

    async fn put_object(&self, o: &ObjectRecord, replace_null: bool) -> Result<Vec<String>> {
        let o = o.clone();
        self.tx_serialized(object_lock(&o.bucket, &o.key), move |t| {
            let mut garbage = Vec::new();
            insert_object(t, &o, replace_null, &mut garbage)?;
            Ok(garbage)
        })
        .await
    }

    async fn object(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<Option<ObjectRecord>> {
        let (bucket, key, version) = (
            bucket.to_owned(),
            key.to_owned(),
            version_id.map(str::to_owned),
        );
        self.tx(move |t| {
            let found = match &version {
                Some(v) => t.query_opt(
                    &format!(
                        "SELECT {OBJECT_COLUMNS} FROM s3_objects WHERE bucket = ?1 AND key = ?2 AND version_id = ?3"
                    ),
                    &p![bucket, key, v],
                    object_row,
                )?,
                None => t.query_opt(
                    &format!(
                        "SELECT {OBJECT_COLUMNS} FROM s3_objects WHERE bucket = ?1 AND key = ?2 AND is_latest = 1"
                    ),
                    &p![bucket, key],
                    object_row,
                )?,
            };
            found
                .map(|mut o| {
                    o.parts = load_parts(t, &o.bucket, &o.key, &o.version_id)?;
                    Ok(o)
                })
                .transpose()
        })
        .await
    }

    async fn delete_object_version(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
    ) -> Result<Option<ObjectRecord>> {
        let (bucket, key, version) = (bucket.to_owned(), key.to_owned(), version_id.to_owned());
        self.tx_serialized(object_lock(&bucket, &key), move |t| {
            let mut garbage = Vec::new();
            let old = remove_version(t, &bucket, &key, &version, &mut garbage)?;
            if old.as_ref().is_some_and(|o| o.is_latest) {
                promote_newest(t, &bucket, &key)?;
            }
            Ok(old)
        })
        .await
    }

    async fn set_object_tags(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
        tags: &str,
    ) -> Result<()> {
        let (bucket, key, version, tags) = (
            bucket.to_owned(),
            key.to_owned(),
            version_id.to_owned(),
            tags.to_owned(),
        );
        self.tx(move |t| {
            change_or_not_found(
                t,
                "UPDATE s3_objects SET tags = ?1 WHERE bucket = ?2 AND key = ?3 AND version_id = ?4 AND delete_marker = 0",
                &p![tags, bucket, key, version],
                &format!("{bucket}/{key} version {version}"),
            )
        })
        .await
    }

    async fn list_objects(&self, bucket: &str, q: &ListQuery<'_>) -> Result<Page<ObjectRecord>> {
        let bucket = bucket.to_owned();
        let start = match q.after {
            Some(a) if a >= q.prefix => a.to_owned(),
            _ => String::new(),
        };
        let prefix = q.prefix.to_owned();
        let end = prefix_end(&prefix);
        let limit = q.limit;
        self.read(move |t| {
            let rows = t.query_map(
                &format!(
                    "SELECT {OBJECT_COLUMNS} FROM s3_objects WHERE bucket = ?1 AND is_latest = 1 \
                     AND delete_marker = 0 AND key > ?2 AND key >= ?3 AND (CAST(?4 AS TEXT) IS NULL OR key < ?4) \
                     ORDER BY key LIMIT ?5"
                ),
                &p![bucket, start, prefix, end, limit as i64 + 1],
                object_row,
            )?;
            Ok(page(rows, limit))
        })
        .await
    }

    async fn list_object_versions(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<(&str, Option<&str>)>,
        limit: usize,
    ) -> Result<Page<ObjectRecord>> {
        let bucket = bucket.to_owned();
        let prefix = prefix.to_owned();
        let end = prefix_end(&prefix);
        let after = after.map(|(k, v)| (k.to_owned(), v.map(str::to_owned)));
        self.tx(move |t| {
            // Where to resume: after every version of the marker key, or after one version of it.
            let (after_key, after_seq) = match &after {
                None => (String::new(), None),
                Some((k, None)) => (k.clone(), None),
                Some((k, Some(v))) => {
                    let seq: Option<i64> = t.query_opt(
                        "SELECT seq FROM s3_objects WHERE bucket = ?1 AND key = ?2 AND version_id = ?3",
                        &p![bucket, k, v],
                        |r| r.get(0),
                    )?;
                    (k.clone(), seq)
                }
            };
            let rows = t.query_map(
                &format!(
                    "SELECT {OBJECT_COLUMNS} FROM s3_objects WHERE bucket = ?1 AND key >= ?2 \
                     AND (CAST(?3 AS TEXT) IS NULL OR key < ?3) \
                     AND (key > ?4 OR (CAST(?5 AS BIGINT) IS NOT NULL AND key = ?4 AND seq < ?5)) \
                     ORDER BY key, seq DESC LIMIT ?6"
                ),
                &p![bucket, prefix, end, after_key, after_seq, limit as i64 + 1],
                object_row,
            )?;
            Ok(page(rows, limit))
        })
        .await
    }

    async fn create_upload(&self, u: &UploadRecord) -> Result<()> {
        let u = u.clone();
        self.tx(move |t| {
            if !bucket_exists(t, &u.bucket)? {
                return Err(MetaError::NotFound(u.bucket.clone()));
            }
            t.execute(
                &format!(
                    "INSERT INTO s3_uploads ({UPLOAD_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
                ),
                &p![
                    u.upload_id,
                    u.bucket,
                    u.key,
                    u.initiated_ms,
                    u.sse.mode,
                    u.sse.sealed_key,
                    u.sse.key_id,
                    u.sse.context,
                    u.sse.key_check,
                    u.sse.bucket_key,
                    u.attrs,
                    u.tags
                ],
            )
            .map_err(|e| e.foreign_key_as(|| MetaError::NotFound(u.bucket.clone())))?;
            Ok(())
        })
        .await
    }

    async fn upload(&self, upload_id: &str) -> Result<Option<UploadRecord>> {
        let id = upload_id.to_owned();
        self.read(move |t| {
            t.query_opt(
                &format!("SELECT {UPLOAD_COLUMNS} FROM s3_uploads WHERE upload_id = ?1"),
                &p![id],
                upload_row,
            )
        })
        .await
    }

    async fn put_upload_part(
        &self,
        upload_id: &str,
        part: &UploadPartRecord,
    ) -> Result<Option<String>> {
        let (id, part) = (upload_id.to_owned(), part.clone());
        self.tx(move |t| {
            if !upload_exists(t, &id)? {
                return Err(MetaError::NotFound(id.clone()));
            }
            let old: Option<String> = t.query_opt(
                "SELECT blob FROM s3_upload_parts WHERE upload_id = ?1 AND part_number = ?2",
                &p![id, part.part_number],
                |r| r.get(0),
            )?;
            discard(t, old.as_deref())?;
            t.execute(
                "INSERT INTO s3_upload_parts (upload_id, part_number, size, etag, blob, checksum, last_modified_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                 ON CONFLICT (upload_id, part_number) DO UPDATE SET size = excluded.size, etag = excluded.etag, \
                 blob = excluded.blob, checksum = excluded.checksum, last_modified_ms = excluded.last_modified_ms",
                &p![id, part.part_number, part.size as i64, part.etag, part.blob, part.checksum, part.last_modified_ms],
            )?;
            Ok(old)
        })
        .await
    }

    async fn upload_parts(
        &self,
        upload_id: &str,
        after: u32,
        limit: usize,
    ) -> Result<Page<UploadPartRecord>> {
        let id = upload_id.to_owned();
        self.read(move |t| {
            let rows = t.query_map(
                "SELECT part_number, size, etag, blob, checksum, last_modified_ms FROM s3_upload_parts \
                 WHERE upload_id = ?1 AND part_number > ?2 ORDER BY part_number LIMIT ?3",
                &p![id, after, limit as i64 + 1],
                |r| {
                    Ok(UploadPartRecord {
                        part_number: r.get(0)?,
                        size: r.get(1)?,
                        etag: r.get(2)?,
                        blob: r.get(3)?,
                        checksum: r.get(4)?,
                        last_modified_ms: r.get(5)?,
                    })
                },
            )?;
            Ok(page(rows, limit))
        })
        .await
    }

    async fn list_uploads(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<(&str, Option<&str>)>,
        limit: usize,
    ) -> Result<Page<UploadRecord>> {
        let bucket = bucket.to_owned();
        let prefix = prefix.to_owned();
        let end = prefix_end(&prefix);
        let (after_key, after_id) = match after {
            None => (String::new(), None),
            Some((k, id)) => (k.to_owned(), id.map(str::to_owned)),
        };
        self.read(move |t| {
            let rows = t.query_map(
                &format!(
                    "SELECT {UPLOAD_COLUMNS} FROM s3_uploads WHERE bucket = ?1 AND key >= ?2 \
                     AND (CAST(?3 AS TEXT) IS NULL OR key < ?3) \
                     AND (key > ?4 OR (CAST(?5 AS TEXT) IS NOT NULL AND key = ?4 AND upload_id > ?5)) \
                     ORDER BY key, upload_id LIMIT ?6"
                ),
                &p![bucket, prefix, end, after_key, after_id, limit as i64 + 1],
                upload_row,
            )?;
            Ok(page(rows, limit))
        })
        .await
    }

    async fn abort_upload(&self, upload_id: &str) -> Result<Vec<String>> {
        let id = upload_id.to_owned();
        self.tx(move |t| {
            if !upload_exists(t, &id)? {
                return Err(MetaError::NotFound(id.clone()));
            }
            let mut garbage = Vec::new();
            remove_upload(t, &id, &[], &mut garbage)?;
            Ok(garbage)
        })
        .await
    }

    async fn complete_upload(
        &self,
        upload_id: &str,
        object: &ObjectRecord,
        replace_null: bool,
    ) -> Result<Vec<String>> {
        let (id, o) = (upload_id.to_owned(), object.clone());
        self.tx_serialized(object_lock(&o.bucket, &o.key), move |t| {
            if !upload_exists(t, &id)? {
                return Err(MetaError::NotFound(id.clone()));
            }
            let mut garbage = Vec::new();
            let keep: Vec<String> = o.parts.iter().map(|p| p.blob.clone()).collect();
            remove_upload(t, &id, &keep, &mut garbage)?;
            insert_object(t, &o, replace_null, &mut garbage)?;
            Ok(garbage)
        })
        .await
    }

    async fn garbage_blobs(&self, limit: usize) -> Result<Vec<String>> {
        self.read(move |t| {
            t.query_map(
                "SELECT blob FROM s3_garbage ORDER BY since_ms LIMIT ?1",
                &p![limit as i64],
                |r| r.get(0),
            )
        })
        .await
    }

    async fn forget_garbage(&self, blobs: &[String]) -> Result<()> {
        let blobs = blobs.to_vec();
        self.tx(move |t| {
            for b in &blobs {
                t.execute("DELETE FROM s3_garbage WHERE blob = ?1", &p![b])?;
            }
            Ok(())
        })
        .await
    }

    async fn referenced_blobs(&self, candidates: &[String]) -> Result<Vec<String>> {
        let candidates = candidates.to_vec();
        self.read(move |t| {
            let mut out = Vec::new();
            for b in &candidates {
                if exists(
                    t,
                    "SELECT 1 FROM s3_objects WHERE blob = ?1 UNION ALL \
                     SELECT 1 FROM s3_object_parts WHERE blob = ?1 UNION ALL \
                     SELECT 1 FROM s3_upload_parts WHERE blob = ?1 LIMIT 1",
                    &p![b],
                )? {
                    out.push(b.clone());
                }
            }
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(bucket: &str, key: &str, version: &str, blob: &str) -> ObjectRecord {
        ObjectRecord {
            bucket: bucket.into(),
            key: key.into(),
            version_id: version.into(),
            is_latest: true,
            delete_marker: false,
            size: 3,
            etag: "\"e\"".into(),
            last_modified_ms: 1,
            blob: Some(blob.into()),
            parts: Vec::new(),
            sse: SseRecord {
                mode: "AES256".into(),
                sealed_key: vec![1, 2, 3],
                ..SseRecord::default()
            },
            attrs: "{}".into(),
            tags: "{}".into(),
        }
    }

    async fn with_bucket(s: SqlStore) -> SqlStore {
        s.create_bucket(&BucketRecord {
            name: "b".into(),
            owner_account: "111122223333".into(),
            region: "us-east-1".into(),
            created_ms: 1,
            versioning: String::new(),
        })
        .await
        .expect("bucket");
        s
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn multipart_upload_completes_into_an_object() {
        for s in crate::testing::stores().await {
            multipart_upload_completes_into_an_object_on(s).await;
        }
    }

    async fn multipart_upload_completes_into_an_object_on(s: SqlStore) {
        let s = with_bucket(s).await;
        let upload = UploadRecord {
            upload_id: "u1".into(),
            bucket: "b".into(),
            key: "big".into(),
            initiated_ms: 1,
            sse: SseRecord::default(),
            attrs: "{}".into(),
            tags: "{}".into(),
        };
        s.create_upload(&upload).await.expect("create");
        let part = |n: u32, blob: &str| UploadPartRecord {
            part_number: n,
            size: 10,
            etag: "\"e\"".into(),
            blob: blob.into(),
            checksum: None,
            last_modified_ms: 1,
        };
        assert_eq!(
            s.put_upload_part("u1", &part(1, "p1")).await.expect("part"),
            None
        );
        assert_eq!(
            s.put_upload_part("u1", &part(1, "p1b"))
                .await
                .expect("part"),
            Some("p1".to_owned())
        );
        s.put_upload_part("u1", &part(2, "p2")).await.expect("part");
        s.put_upload_part("u1", &part(3, "p3")).await.expect("part");
        assert_eq!(
            s.upload_parts("u1", 0, 10)
                .await
                .expect("parts")
                .items
                .len(),
            3
        );
        let mut o = object("b", "big", NULL_VERSION, "unused");
        o.blob = None;
        o.parts = vec![
            PartRef {
                part_number: 1,
                size: 10,
                blob: "p1b".into(),
            },
            PartRef {
                part_number: 2,
                size: 10,
                blob: "p2".into(),
            },
        ];
        let g = s.complete_upload("u1", &o, true).await.expect("complete");
        assert_eq!(g, vec!["p3".to_owned()]);
        assert!(s.upload("u1").await.expect("upload").is_none());
        let got = s
            .object("b", "big", None)
            .await
            .expect("get")
            .expect("some");
        assert_eq!(got.parts, o.parts);
        assert_eq!(
            s.referenced_blobs(&["p1b".into(), "p3".into()])
                .await
                .expect("refs"),
            vec!["p1b".to_owned()]
        );
        // Deleting the object discards every part.
        s.delete_object_version("b", "big", NULL_VERSION)
            .await
            .expect("delete");
        let garbage = s.garbage_blobs(10).await.expect("garbage");
        for b in ["p1", "p1b", "p2", "p3"] {
            assert!(garbage.contains(&b.to_owned()), "{b}");
        }
        assert!(matches!(
            s.abort_upload("u1").await,
            Err(MetaError::NotFound(_))
        ));
    }

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end("ab").as_deref(), Some("ac"));
        assert_eq!(prefix_end("").as_deref(), None);
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unversioned_put_replaces_and_discards_the_old_blob() {
        for s in crate::testing::stores().await {
            unversioned_put_replaces_and_discards_the_old_blob_on(s).await;
        }
    }

    async fn unversioned_put_replaces_and_discards_the_old_blob_on(s: SqlStore) {
        let s = with_bucket(s).await;
        assert!(
            s.put_object(&object("b", "k", NULL_VERSION, "blob1"), true)
                .await
                .expect("put")
                .is_empty()
        );
        let g = s
            .put_object(&object("b", "k", NULL_VERSION, "blob2"), true)
            .await
            .expect("put");
        assert_eq!(g, vec!["blob1".to_owned()]);
        assert_eq!(s.garbage_blobs(10).await.expect("garbage"), g);
        let got = s.object("b", "k", None).await.expect("get").expect("some");
        assert_eq!(got.blob.as_deref(), Some("blob2"));
        assert_eq!(
            s.referenced_blobs(&["blob1".into(), "blob2".into()])
                .await
                .expect("refs"),
            vec!["blob2".to_owned()]
        );
        assert!(matches!(
            s.delete_bucket("b").await,
            Err(MetaError::InUse(_))
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn versions_and_latest() {
        for s in crate::testing::stores().await {
            versions_and_latest_on(s).await;
        }
    }

    async fn versions_and_latest_on(s: SqlStore) {
        let s = with_bucket(s).await;
        s.put_object(&object("b", "k", "v1", "x1"), false)
            .await
            .expect("put");
        s.put_object(&object("b", "k", "v2", "x2"), false)
            .await
            .expect("put");
        s.put_object(&object("b", "j", "v3", "x3"), false)
            .await
            .expect("put");
        let latest = s.object("b", "k", None).await.expect("get").expect("some");
        assert_eq!(latest.version_id, "v2");
        let all = s
            .list_object_versions("b", "", None, 10)
            .await
            .expect("list");
        let ids: Vec<_> = all.items.iter().map(|o| o.version_id.as_str()).collect();
        assert_eq!(ids, ["v3", "v2", "v1"]);
        let rest = s
            .list_object_versions("b", "", Some(("k", Some("v2"))), 10)
            .await
            .expect("list");
        assert_eq!(rest.items.len(), 1);
        assert_eq!(rest.items[0].version_id, "v1");
        s.delete_object_version("b", "k", "v2")
            .await
            .expect("delete")
            .expect("was there");
        let latest = s.object("b", "k", None).await.expect("get").expect("some");
        assert_eq!((latest.version_id.as_str(), latest.is_latest), ("v1", true));
        let listed = s
            .list_objects(
                "b",
                &ListQuery {
                    prefix: "k",
                    after: None,
                    limit: 10,
                },
            )
            .await
            .expect("list");
        assert_eq!(listed.items.len(), 1);
    }
}
