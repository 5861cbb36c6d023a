//! Discovery jobs, findings and settings.

use async_trait::async_trait;

use super::change_or_not_found;
use crate::discovery::{DiscoveryMeta, FindingRecord, JobRecord};
use crate::sql::{Row, SqlStore, p};
use crate::{MetaError, Result};

const JOB_COLUMNS: &str = "id, client_token, created_ms, status, doc";

fn job_row(r: &Row) -> Result<JobRecord> {
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

fn finding_row(r: &Row) -> Result<FindingRecord> {
    Ok(FindingRecord {
        id: r.get(0)?,
        bucket: r.get(1)?,
        key: r.get(2)?,
        severity: r.get(3)?,
        finding_type: r.get(4)?,
        origin: r.get(5)?,
        created_ms: r.get(6)?,
        updated_ms: r.get(7)?,
        archived: r.get(8)?,
        doc: r.get(9)?,
    })
}

#[async_trait]
impl DiscoveryMeta for SqlStore {
    async fn create_job(&self, job: &JobRecord) -> Result<()> {
        let j = job.clone();
        self.tx(move |t| {
            // Either uniqueness rule (id, client token) turns the insert into nothing.
            let n = t.execute(
                &format!(
                    "INSERT INTO discovery_jobs ({JOB_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING"
                ),
                &p![j.id, j.client_token, j.created_ms, j.status, j.doc],
            )?;
            if n == 0 {
                return Err(MetaError::AlreadyExists(format!("classification job {}", j.id)));
            }
            Ok(())
        })
        .await
    }

    async fn job(&self, id: &str) -> Result<Option<JobRecord>> {
        let id = id.to_owned();
        self.read(move |t| {
            t.query_opt(
                &format!("SELECT {JOB_COLUMNS} FROM discovery_jobs WHERE id = ?1"),
                &p![id],
                job_row,
            )
        })
        .await
    }

    async fn job_by_token(&self, client_token: &str) -> Result<Option<JobRecord>> {
        let token = client_token.to_owned();
        self.read(move |t| {
            t.query_opt(
                &format!("SELECT {JOB_COLUMNS} FROM discovery_jobs WHERE client_token = ?1"),
                &p![token],
                job_row,
            )
        })
        .await
    }

    async fn jobs(&self) -> Result<Vec<JobRecord>> {
        self.read(|t| {
            t.query_map(
                &format!("SELECT {JOB_COLUMNS} FROM discovery_jobs ORDER BY created_ms DESC, id"),
                &[],
                job_row,
            )
        })
        .await
    }

    async fn update_job(&self, job: &JobRecord) -> Result<()> {
        let j = job.clone();
        self.tx(move |t| {
            change_or_not_found(
                t,
                "UPDATE discovery_jobs SET status = ?2, doc = ?3 WHERE id = ?1",
                &p![j.id, j.status, j.doc],
                &format!("classification job {}", j.id),
            )
        })
        .await
    }

    async fn put_findings(&self, findings: &[FindingRecord]) -> Result<()> {
        if findings.is_empty() {
            return Ok(());
        }
        let all = findings.to_vec();
        self.tx(move |t| {
            let sql = format!(
                "INSERT INTO discovery_findings ({FINDING_COLUMNS}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
                 ON CONFLICT(id) DO UPDATE SET severity = excluded.severity, \
                 finding_type = excluded.finding_type, updated_ms = excluded.updated_ms, \
                 archived = excluded.archived, doc = excluded.doc"
            );
            for f in &all {
                t.execute(
                    &sql,
                    &p![
                        f.id,
                        f.bucket,
                        f.key,
                        f.severity,
                        f.finding_type,
                        f.origin,
                        f.created_ms,
                        f.updated_ms,
                        f.archived,
                        f.doc
                    ],
                )?;
            }
            Ok(())
        })
        .await
    }

    async fn findings(&self, bucket: Option<&str>) -> Result<Vec<FindingRecord>> {
        let bucket = bucket.map(str::to_owned);
        self.read(move |t| {
            t.query_map(
                &format!(
                    "SELECT {FINDING_COLUMNS} FROM discovery_findings \
                     WHERE CAST(?1 AS TEXT) IS NULL OR bucket = ?1 ORDER BY updated_ms DESC, id"
                ),
                &p![bucket],
                finding_row,
            )
        })
        .await
    }

    async fn purge_findings(&self, updated_before_ms: i64) -> Result<u64> {
        self.tx(move |t| {
            let n = t.execute(
                "DELETE FROM discovery_findings WHERE updated_ms < ?1",
                &p![updated_before_ms],
            )?;
            Ok(n as u64)
        })
        .await
    }

    async fn findings_by_id(&self, ids: &[String]) -> Result<Vec<FindingRecord>> {
        let ids = ids.to_vec();
        self.read(move |t| {
            let mut out = Vec::new();
            for id in &ids {
                if let Some(f) = t.query_opt(
                    &format!("SELECT {FINDING_COLUMNS} FROM discovery_findings WHERE id = ?1"),
                    &p![id],
                    finding_row,
                )? {
                    out.push(f);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn discovery_setting(&self, name: &str) -> Result<Option<String>> {
        let name = name.to_owned();
        self.read(move |t| {
            t.query_opt(
                "SELECT value FROM discovery_settings WHERE name = ?1",
                &p![name],
                |r| r.get(0),
            )
        })
        .await
    }

    async fn put_discovery_setting(&self, name: &str, value: &str) -> Result<()> {
        let (name, value) = (name.to_owned(), value.to_owned());
        self.tx(move |t| {
            t.execute(
                "INSERT INTO discovery_settings (name, value) VALUES (?1, ?2) \
                 ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                &p![name, value],
            )?;
            Ok(())
        })
        .await
    }

    async fn discovery_settings_under(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        let prefix = prefix.to_owned();
        self.read(move |t| {
            t.query_map(
                "SELECT name, value FROM discovery_settings \
                 WHERE substr(name, 1, length(CAST(?1 AS TEXT))) = CAST(?1 AS TEXT) ORDER BY name",
                &p![prefix],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
        .await
    }

    async fn delete_discovery_setting(&self, name: &str) -> Result<()> {
        let name = name.to_owned();
        self.tx(move |t| {
            change_or_not_found(
                t,
                "DELETE FROM discovery_settings WHERE name = ?1",
                &p![name],
                &format!("discovery setting {name}"),
            )
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_are_unique_by_id_and_token() {
        for s in crate::testing::stores().await {
            jobs_are_unique_by_id_and_token_on(s).await;
        }
    }

    async fn jobs_are_unique_by_id_and_token_on(s: SqlStore) {
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn findings_upsert_keeps_creation_time() {
        for s in crate::testing::stores().await {
            findings_upsert_keeps_creation_time_on(s).await;
        }
    }

    async fn findings_upsert_keeps_creation_time_on(s: SqlStore) {
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
        // Retention: what was last updated before the cut goes, the rest stays.
        assert_eq!(s.purge_findings(25).await.expect("purge"), 1);
        let left = s.findings(None).await.expect("all");
        assert_eq!(
            left.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(),
            ["f1"]
        );
        assert_eq!(s.purge_findings(25).await.expect("again"), 0);
    }
}
