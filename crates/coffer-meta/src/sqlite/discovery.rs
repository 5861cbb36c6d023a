//! Discovery jobs, findings and settings in SQLite.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

use super::{SqliteStore, backend};
use crate::discovery::{DiscoveryMeta, FindingRecord, JobRecord};
use crate::{MetaError, Result};

const JOB_COLUMNS: &str = "id, client_token, created_ms, status, doc";

fn job_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobRecord> {
    Ok(JobRecord {
        id: r.get(0)?,
        client_token: r.get(1)?,
        created_ms: r.get(2)?,
        status: r.get(3)?,
        doc: r.get(4)?,
    })
}

const FINDING_COLUMNS: &str =
    "id, bucket, key, severity, finding_type, origin, created_ms, updated_ms, archived, doc";

fn finding_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FindingRecord> {
    Ok(FindingRecord {
        id: r.get(0)?,
        bucket: r.get(1)?,
        key: r.get(2)?,
        severity: r.get(3)?,
        finding_type: r.get(4)?,
        origin: r.get(5)?,
        created_ms: r.get(6)?,
        updated_ms: r.get(7)?,
        archived: r.get::<_, i64>(8)? != 0,
        doc: r.get(9)?,
    })
}

#[async_trait]
impl DiscoveryMeta for SqliteStore {
    async fn create_job(&self, job: &JobRecord) -> Result<()> {
        let j = job.clone();
        self.with(move |c| {
            let n = c
                .execute(
                    &format!(
                        "INSERT OR IGNORE INTO discovery_jobs ({JOB_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)"
                    ),
                    params![j.id, j.client_token, j.created_ms, j.status, j.doc],
                )
                .map_err(backend)?;
            if n == 0 {
                return Err(MetaError::AlreadyExists(format!("classification job {}", j.id)));
            }
            Ok(())
        })
        .await
    }

    async fn job(&self, id: &str) -> Result<Option<JobRecord>> {
        let id = id.to_owned();
        self.with(move |c| {
            c.query_row(
                &format!("SELECT {JOB_COLUMNS} FROM discovery_jobs WHERE id = ?1"),
                [id],
                job_row,
            )
            .optional()
            .map_err(backend)
        })
        .await
    }

    async fn job_by_token(&self, client_token: &str) -> Result<Option<JobRecord>> {
        let token = client_token.to_owned();
        self.with(move |c| {
            c.query_row(
                &format!("SELECT {JOB_COLUMNS} FROM discovery_jobs WHERE client_token = ?1"),
                [token],
                job_row,
            )
            .optional()
            .map_err(backend)
        })
        .await
    }

    async fn jobs(&self) -> Result<Vec<JobRecord>> {
        self.with(|c| {
            let mut st = c
                .prepare(&format!(
                    "SELECT {JOB_COLUMNS} FROM discovery_jobs ORDER BY created_ms DESC, id"
                ))
                .map_err(backend)?;
            st.query_map([], job_row)
                .map_err(backend)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(backend)
        })
        .await
    }

    async fn update_job(&self, job: &JobRecord) -> Result<()> {
        let j = job.clone();
        self.with(move |c| {
            let n = c
                .execute(
                    "UPDATE discovery_jobs SET status = ?2, doc = ?3 WHERE id = ?1",
                    params![j.id, j.status, j.doc],
                )
                .map_err(backend)?;
            if n == 0 {
                return Err(MetaError::NotFound(format!("classification job {}", j.id)));
            }
            Ok(())
        })
        .await
    }

    async fn put_findings(&self, findings: &[FindingRecord]) -> Result<()> {
        if findings.is_empty() {
            return Ok(());
        }
        let all = findings.to_vec();
        self.with(move |c| {
            let tx = c.transaction().map_err(backend)?;
            {
                let mut st = tx
                    .prepare(&format!(
                        "INSERT INTO discovery_findings ({FINDING_COLUMNS}) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
                         ON CONFLICT(id) DO UPDATE SET severity = excluded.severity, \
                         finding_type = excluded.finding_type, updated_ms = excluded.updated_ms, \
                         archived = excluded.archived, doc = excluded.doc"
                    ))
                    .map_err(backend)?;
                for f in &all {
                    st.execute(params![
                        f.id,
                        f.bucket,
                        f.key,
                        f.severity,
                        f.finding_type,
                        f.origin,
                        f.created_ms,
                        f.updated_ms,
                        f.archived as i64,
                        f.doc
                    ])
                    .map_err(backend)?;
                }
            }
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn findings(&self, bucket: Option<&str>) -> Result<Vec<FindingRecord>> {
        let bucket = bucket.map(str::to_owned);
        self.with(move |c| {
            let mut st = c
                .prepare(&format!(
                    "SELECT {FINDING_COLUMNS} FROM discovery_findings \
                     WHERE ?1 IS NULL OR bucket = ?1 ORDER BY updated_ms DESC, id"
                ))
                .map_err(backend)?;
            st.query_map([bucket], finding_row)
                .map_err(backend)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(backend)
        })
        .await
    }

    async fn findings_by_id(&self, ids: &[String]) -> Result<Vec<FindingRecord>> {
        let ids = ids.to_vec();
        self.with(move |c| {
            let mut st = c
                .prepare(&format!(
                    "SELECT {FINDING_COLUMNS} FROM discovery_findings WHERE id = ?1"
                ))
                .map_err(backend)?;
            let mut out = Vec::new();
            for id in ids {
                if let Some(f) = st
                    .query_row([id], finding_row)
                    .optional()
                    .map_err(backend)?
                {
                    out.push(f);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn discovery_setting(&self, name: &str) -> Result<Option<String>> {
        let name = name.to_owned();
        self.with(move |c| {
            c.query_row(
                "SELECT value FROM discovery_settings WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)
        })
        .await
    }

    async fn put_discovery_setting(&self, name: &str, value: &str) -> Result<()> {
        let (name, value) = (name.to_owned(), value.to_owned());
        self.with(move |c| {
            c.execute(
                "INSERT INTO discovery_settings (name, value) VALUES (?1, ?2) \
                 ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                params![name, value],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn discovery_settings_under(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        let prefix = prefix.to_owned();
        self.with(move |c| {
            let mut st = c
                .prepare(
                    "SELECT name, value FROM discovery_settings \
                     WHERE substr(name, 1, length(?1)) = ?1 ORDER BY name",
                )
                .map_err(backend)?;
            st.query_map([prefix], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(backend)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(backend)
        })
        .await
    }

    async fn delete_discovery_setting(&self, name: &str) -> Result<()> {
        let name = name.to_owned();
        self.with(move |c| {
            let n = c
                .execute("DELETE FROM discovery_settings WHERE name = ?1", [&name])
                .map_err(backend)?;
            if n == 0 {
                return Err(MetaError::NotFound(format!("discovery setting {name}")));
            }
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = SqliteStore::open(&dir.path().join("meta.db")).expect("open");
        (dir, s)
    }

    fn finding(id: &str, bucket: &str, updated: i64) -> FindingRecord {
        FindingRecord {
            id: id.into(),
            bucket: bucket.into(),
            key: "k".into(),
            severity: "HIGH".into(),
            finding_type: "SensitiveData:S3Object/Personal".into(),
            origin: "job1".into(),
            created_ms: updated,
            updated_ms: updated,
            archived: false,
            doc: "{}".into(),
        }
    }

    #[tokio::test]
    async fn jobs_are_unique_by_id_and_token() {
        let (_d, s) = store();
        let job = JobRecord {
            id: "j1".into(),
            client_token: "t1".into(),
            created_ms: 1,
            status: "RUNNING".into(),
            doc: "{}".into(),
        };
        s.create_job(&job).await.expect("create");
        let again = JobRecord {
            id: "j2".into(),
            ..job.clone()
        };
        assert!(matches!(
            s.create_job(&again).await,
            Err(MetaError::AlreadyExists(_))
        ));
        assert_eq!(
            s.job_by_token("t1").await.expect("token"),
            Some(job.clone())
        );
        let done = JobRecord {
            status: "COMPLETE".into(),
            ..job
        };
        s.update_job(&done).await.expect("update");
        assert_eq!(s.jobs().await.expect("jobs"), vec![done]);
        let gone = JobRecord {
            id: "nope".into(),
            ..again
        };
        assert!(matches!(
            s.update_job(&gone).await,
            Err(MetaError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn findings_upsert_keeps_creation_time() {
        let (_d, s) = store();
        s.put_findings(&[finding("f1", "a", 10), finding("f2", "b", 20)])
            .await
            .expect("put");
        let mut later = finding("f1", "a", 30);
        later.severity = "LOW".into();
        s.put_findings(&[later]).await.expect("replace");
        s.put_findings(&[]).await.expect("nothing");
        let all = s.findings(None).await.expect("all");
        assert_eq!(
            all.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(),
            ["f1", "f2"]
        );
        assert_eq!((all[0].created_ms, all[0].updated_ms), (10, 30));
        assert_eq!(all[0].severity, "LOW");
        assert_eq!(s.findings(Some("b")).await.expect("b").len(), 1);
        let got = s
            .findings_by_id(&["f2".into(), "missing".into()])
            .await
            .expect("by id");
        assert_eq!(got.len(), 1);
        assert_eq!(s.discovery_setting("x").await.expect("get"), None);
        s.put_discovery_setting("x", "1").await.expect("set");
        s.put_discovery_setting("x", "2").await.expect("set");
        assert_eq!(
            s.discovery_setting("x").await.expect("get").as_deref(),
            Some("2")
        );
    }
}
