//! Discovery jobs, findings and settings.

use async_trait::async_trait;

use std::cmp::Ordering;

use super::change_or_not_found;
use crate::discovery::{
    DiscoveryMeta, FindingField, FindingQuery, FindingRecord, FindingTerms, FindingTest, JobRecord,
    Scalar,
};
use crate::sql::{Dialect, Row, SqlStore, Tx, Value, p};
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

/// A finding's row (the document is in a table of its own, so that scans read only these).
const ROW_COLUMNS: &str =
    "id, bucket, key, severity, finding_type, origin, created_ms, updated_ms, archived";
/// The columns of [`finding_row`], from `f` (the row) joined with `d` (its document).
const FINDING_COLUMNS: &str = "f.id, f.bucket, f.key, f.severity, f.finding_type, f.origin, \
    f.created_ms, f.updated_ms, f.archived, d.doc";
const FROM_FINDINGS: &str = "discovery_findings f JOIN discovery_finding_docs d ON d.id = f.id";

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

    async fn put_findings(&self, findings: &[(FindingRecord, FindingTerms)]) -> Result<()> {
        if findings.is_empty() {
            return Ok(());
        }
        let all = findings.to_vec();
        self.tx(move |t| {
            let sql = format!(
                "INSERT INTO discovery_findings ({ROW_COLUMNS}, indexed) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 1) \
                 ON CONFLICT(id) DO UPDATE SET severity = excluded.severity, \
                 finding_type = excluded.finding_type, updated_ms = excluded.updated_ms, \
                 archived = CASE WHEN discovery_findings.archived = 1 THEN 1 ELSE excluded.archived END, \
                 indexed = 1"
            );
            for (f, terms) in &all {
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
                        f.archived
                    ],
                )?;
                t.execute(
                    "INSERT INTO discovery_finding_docs (id, doc) VALUES (?1, ?2) \
                     ON CONFLICT(id) DO UPDATE SET doc = excluded.doc",
                    &p![f.id, f.doc],
                )?;
                put_terms(t, &f.id, terms)?;
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
                    "SELECT {FINDING_COLUMNS} FROM {FROM_FINDINGS} \
                     WHERE CAST(?1 AS TEXT) IS NULL OR f.bucket = ?1 ORDER BY f.updated_ms DESC, f.id"
                ),
                &p![bucket],
                finding_row,
            )
        })
        .await
    }

    async fn query_findings(&self, query: &FindingQuery) -> Result<Vec<(Scalar, FindingRecord)>> {
        if !query.order.sortable() {
            return Err(MetaError::Backend(format!(
                "findings cannot be ordered by {:?}",
                query.order
            )));
        }
        let q = query.clone();
        self.read(move |t| {
            let mut sql = Sql::new(t.dialect());
            let key = sql.sort_key(&q.order);
            // The page is chosen from the rows alone; only its documents are read.
            let mut text = format!(
                "SELECT f.id AS page_id, {key} AS page_key FROM discovery_findings f WHERE 1 = 1"
            );
            for test in &q.tests {
                let cond = sql.test(test);
                text.push_str(&format!(" AND {cond}"));
            }
            let (cmp, dir) = if q.descending {
                ("<", "DESC")
            } else {
                (">", "ASC")
            };
            let id = sql.collated("f.id");
            if let Some((value, after_id)) = &q.after {
                let (v, i) = (
                    sql.bind(value.clone()),
                    sql.bind(Scalar::Text(after_id.clone())),
                );
                text.push_str(&format!(" AND ({key}, {id}) {cmp} ({v}, {i})"));
            }
            let limit = q.limit.min(i64::MAX as usize);
            text.push_str(&format!(" ORDER BY {key} {dir}, {id} {dir} LIMIT {limit}"));
            let page_id = sql.collated("p.page_id");
            let text = format!(
                "SELECT {FINDING_COLUMNS}, p.page_key FROM ({text}) p \
                 JOIN discovery_findings f ON f.id = p.page_id \
                 JOIN discovery_finding_docs d ON d.id = p.page_id \
                 ORDER BY p.page_key {dir}, {page_id} {dir}"
            );
            t.query_map(&text, &sql.params, |r| {
                let value = match r.0.get(10) {
                    Some(Value::Int(i)) => Scalar::Int(*i),
                    Some(Value::Text(s)) => Scalar::Text(s.clone()),
                    _ => Scalar::Text(String::new()),
                };
                Ok((value, finding_row(r)?))
            })
        })
        .await
    }

    async fn count_findings(
        &self,
        tests: &[FindingTest],
        group: &FindingField,
    ) -> Result<Vec<(Scalar, u64)>> {
        if !group.sortable() {
            return Err(MetaError::Backend(format!(
                "findings cannot be grouped by {group:?}"
            )));
        }
        let (tests, group) = (tests.to_vec(), group.clone());
        self.read(move |t| {
            let mut sql = Sql::new(t.dialect());
            // SQLite: `+` keeps the planner from walking the group's index (a lookup per row) where
            // reading the narrow rows and grouping them is faster; criteria still use indexes.
            let plus = if t.dialect() == Dialect::Sqlite {
                "+"
            } else {
                ""
            };
            let key = format!("{plus}{}", sql.sort_key(&group));
            let mut text = format!("SELECT {key}, COUNT(*) FROM discovery_findings f WHERE 1 = 1");
            for test in &tests {
                let cond = sql.test(test);
                text.push_str(&format!(" AND {cond}"));
            }
            text.push_str(&format!(" GROUP BY {key} ORDER BY 1"));
            t.query_map(&text, &sql.params, |r| {
                let value = match r.0.first() {
                    Some(Value::Int(i)) => Scalar::Int(*i),
                    Some(Value::Text(s)) => Scalar::Text(s.clone()),
                    _ => Scalar::Text(String::new()),
                };
                Ok((value, r.get::<i64>(1)? as u64))
            })
        })
        .await
    }

    async fn archive_findings(&self, ids: &[String]) -> Result<u64> {
        let ids = ids.to_vec();
        self.tx(move |t| {
            let mut n = 0;
            for id in &ids {
                n += t.execute(
                    "UPDATE discovery_findings SET archived = 1 WHERE id = ?1 AND archived = 0",
                    &p![id],
                )? as u64;
            }
            Ok(n)
        })
        .await
    }

    async fn unindexed_findings(&self, limit: usize) -> Result<Vec<FindingRecord>> {
        let limit = limit.min(i64::MAX as usize) as i64;
        self.read(move |t| {
            t.query_map(
                &format!(
                    "SELECT {FINDING_COLUMNS} FROM {FROM_FINDINGS} WHERE f.indexed = 0 ORDER BY f.id LIMIT ?1"
                ),
                &p![limit],
                finding_row,
            )
        })
        .await
    }

    async fn optimize_findings(&self) -> Result<()> {
        self.tx(|t| {
            if t.dialect() == Dialect::Sqlite {
                // Sampled statistics mislead the planner here (it then sorts every High
                // finding rather than walking the time index), so the table is read whole.
                t.execute("ANALYZE discovery_findings", &[])?;
            }
            Ok(())
        })
        .await
    }

    async fn index_findings(&self, terms: &[(String, FindingTerms)]) -> Result<()> {
        let all = terms.to_vec();
        self.tx(move |t| {
            for (id, terms) in &all {
                if t.execute(
                    "UPDATE discovery_findings SET indexed = 1 WHERE id = ?1",
                    &p![id],
                )? > 0
                {
                    put_terms(t, id, terms)?;
                }
            }
            Ok(())
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
                    &format!("SELECT {FINDING_COLUMNS} FROM {FROM_FINDINGS} WHERE f.id = ?1"),
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

/// Replaces a finding's terms.
fn put_terms(t: &mut dyn Tx, id: &str, terms: &FindingTerms) -> Result<()> {
    t.execute(
        "DELETE FROM discovery_finding_terms WHERE finding_id = ?1",
        &p![id],
    )?;
    for (field, value) in terms {
        t.execute(
            "INSERT INTO discovery_finding_terms (field, value, finding_id) VALUES (?1, ?2, ?3) \
             ON CONFLICT DO NOTHING",
            &p![field, value, id],
        )?;
    }
    Ok(())
}

/// A findings statement being written: its parameters, numbered as they are bound.
struct Sql {
    dialect: Dialect,
    params: Vec<Value>,
}

impl Sql {
    fn new(dialect: Dialect) -> Self {
        Sql {
            dialect,
            params: Vec::new(),
        }
    }

    fn bind(&mut self, v: Scalar) -> String {
        self.params.push(match v {
            Scalar::Int(i) => Value::Int(i),
            Scalar::Text(s) => Value::Text(s),
        });
        format!("?{}", self.params.len())
    }

    /// Text compared byte by byte on both engines (PostgreSQL's default collation is the locale's).
    fn collated(&self, expr: &str) -> String {
        match self.dialect {
            Dialect::Sqlite => expr.to_owned(),
            Dialect::Postgres => format!("({expr} COLLATE \"C\")"),
        }
    }

    /// The field's value, NULL where it is absent.
    fn value(&self, field: &FindingField) -> String {
        match field {
            FindingField::Id => "f.id".into(),
            FindingField::Bucket => "NULLIF(f.bucket, '')".into(),
            FindingField::Key => "NULLIF(f.key, '')".into(),
            FindingField::Severity => "f.severity".into(),
            FindingField::SeverityRank => SEVERITY_RANK.into(),
            FindingField::FindingType => "f.finding_type".into(),
            FindingField::JobId => JOB_ID.into(),
            FindingField::CreatedMs => "f.created_ms".into(),
            FindingField::UpdatedMs => "f.updated_ms".into(),
            FindingField::Archived => "f.archived".into(),
            FindingField::Term(_) => "NULL".into(),
        }
    }

    /// The field's value to order and group by: never NULL (absent text is empty).
    fn sort_key(&self, field: &FindingField) -> String {
        match field {
            FindingField::Bucket => self.collated("f.bucket"),
            FindingField::Key => self.collated("f.key"),
            FindingField::JobId => self.collated(&format!("COALESCE({JOB_ID}, '')")),
            FindingField::Id | FindingField::Severity | FindingField::FindingType => {
                self.collated(&self.value(field))
            }
            _ => self.value(field),
        }
    }

    fn list(&mut self, values: &[Scalar]) -> String {
        values
            .iter()
            .map(|v| self.bind(v.clone()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn test(&mut self, test: &FindingTest) -> String {
        match test {
            FindingTest::In(_, values) | FindingTest::NotIn(_, values) if values.is_empty() => {
                // Nothing is in an empty list.
                if matches!(test, FindingTest::In(..)) {
                    "1 = 0"
                } else {
                    "1 = 1"
                }
                .into()
            }
            FindingTest::In(FindingField::Term(name), values) => self.term_exists(name, values),
            FindingTest::NotIn(FindingField::Term(name), values) => {
                format!("NOT {}", self.term_exists(name, values))
            }
            FindingTest::In(field, values) => match stored_column(field) {
                // On the column itself (so that its index serves), without the values that
                // stand for "absent".
                Some((column, absent)) => {
                    let present: Vec<Scalar> = values
                        .iter()
                        .filter(|v| !matches!(v, Scalar::Text(t) if absent.contains(&t.as_str())))
                        .cloned()
                        .collect();
                    if present.is_empty() {
                        "1 = 0".into()
                    } else {
                        // SQLite: a column of two or three values is a poor index; `+` keeps the
                        // planner walking the order's index instead of sorting every match.
                        let few = matches!(field, FindingField::Severity | FindingField::Archived);
                        let plus = if few && self.dialect == Dialect::Sqlite {
                            "+"
                        } else {
                            ""
                        };
                        format!("{plus}{column} IN ({})", self.list(&present))
                    }
                }
                None => {
                    let v = self.value(field);
                    format!("{v} IN ({})", self.list(values))
                }
            },
            FindingTest::NotIn(field, values) => match stored_column(field) {
                Some((column, [])) => format!("{column} NOT IN ({})", self.list(values)),
                Some((column, absent)) => {
                    let absent: Vec<Scalar> = absent
                        .iter()
                        .map(|a| Scalar::Text((*a).to_owned()))
                        .collect();
                    format!(
                        "({column} IN ({}) OR {column} NOT IN ({}))",
                        self.list(&absent),
                        self.list(values)
                    )
                }
                None => {
                    let v = self.value(field);
                    format!("({v} IS NULL OR {v} NOT IN ({}))", self.list(values))
                }
            },
            FindingTest::Compare(field, orderings, bound) => {
                let v = self.value(field);
                let b = self.bind(Scalar::Int(*bound));
                let parts: Vec<String> = orderings
                    .iter()
                    .map(|o| {
                        let op = match o {
                            Ordering::Less => "<",
                            Ordering::Equal => "=",
                            Ordering::Greater => ">",
                        };
                        format!("{v} {op} {b}")
                    })
                    .collect();
                if parts.is_empty() {
                    "1 = 0".into()
                } else {
                    format!("({})", parts.join(" OR "))
                }
            }
        }
    }

    fn term_exists(&mut self, name: &str, values: &[Scalar]) -> String {
        let field = self.bind(Scalar::Text(name.to_owned()));
        let texts: Vec<Scalar> = values
            .iter()
            .map(|v| match v {
                Scalar::Int(i) => Scalar::Text(i.to_string()),
                t => t.clone(),
            })
            .collect();
        format!(
            "EXISTS (SELECT 1 FROM discovery_finding_terms t WHERE t.field = {field} \
             AND t.value IN ({}) AND t.finding_id = f.id)",
            self.list(&texts)
        )
    }
}

/// The column a field is stored in, never NULL, and the values of it that mean the field is
/// absent; `None` for fields computed from columns.
fn stored_column(field: &FindingField) -> Option<(&'static str, &'static [&'static str])> {
    Some(match field {
        FindingField::Id => ("f.id", &[]),
        FindingField::Bucket => ("f.bucket", &[""]),
        FindingField::Key => ("f.key", &[""]),
        FindingField::Severity => ("f.severity", &[]),
        FindingField::FindingType => ("f.finding_type", &[]),
        FindingField::JobId => ("f.origin", &["AUTOMATED", "ANOMALY"]),
        FindingField::CreatedMs => ("f.created_ms", &[]),
        FindingField::UpdatedMs => ("f.updated_ms", &[]),
        FindingField::Archived => ("f.archived", &[]),
        FindingField::SeverityRank | FindingField::Term(_) => return None,
    })
}

const SEVERITY_RANK: &str =
    "(CASE f.severity WHEN 'LOW' THEN 1 WHEN 'MEDIUM' THEN 2 WHEN 'HIGH' THEN 3 ELSE 0 END)";
const JOB_ID: &str = "(CASE WHEN f.origin IN ('AUTOMATED', 'ANOMALY') THEN NULL ELSE f.origin END)";

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

    fn plain(f: FindingRecord) -> (FindingRecord, FindingTerms) {
        (f, Vec::new())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn findings_are_queried_by_columns_and_terms_in_pages() {
        for s in crate::testing::stores().await {
            findings_are_queried_on(s).await;
        }
    }

    async fn findings_are_queried_on(s: SqlStore) {
        let term = |v: &str| ("detection".to_owned(), v.to_owned());
        let mut all = Vec::new();
        for i in 0..30_i64 {
            let mut f = finding(
                &format!("f{i:02}"),
                ["a", "b", ""][i as usize % 3],
                100 + i % 7,
            );
            f.severity = ["LOW", "MEDIUM", "HIGH"][i as usize % 3].into();
            f.origin = if i % 2 == 0 {
                "AUTOMATED".into()
            } else {
                format!("job{}", i % 4)
            };
            let terms = if i % 5 == 0 {
                vec![]
            } else {
                vec![term("SSN"), term(&format!("T{}", i % 4))]
            };
            all.push((f, terms));
        }
        s.put_findings(&all).await.expect("put");
        let ids = |rows: &[(Scalar, FindingRecord)]| -> Vec<String> {
            rows.iter().map(|(_, f)| f.id.clone()).collect()
        };
        let query = |tests: Vec<FindingTest>, order: FindingField, descending: bool| FindingQuery {
            tests,
            order,
            descending,
            after: None,
            limit: 100,
        };
        // An absent bucket is in no list and outside every list.
        let got = s
            .query_findings(&query(
                vec![FindingTest::In(
                    FindingField::Bucket,
                    vec![Scalar::Text("a".into())],
                )],
                FindingField::Id,
                false,
            ))
            .await
            .expect("in");
        assert_eq!(got.len(), 10);
        let got = s
            .query_findings(&query(
                vec![FindingTest::NotIn(
                    FindingField::Bucket,
                    vec![Scalar::Text("a".into())],
                )],
                FindingField::Id,
                false,
            ))
            .await
            .expect("not in");
        assert_eq!(
            got.len(),
            20,
            "the ten without a bucket count as not in the list"
        );
        // Terms: any of a finding's values.
        let t1 = FindingTest::In(
            FindingField::Term("detection".into()),
            vec![Scalar::Text("T1".into())],
        );
        let got = s
            .query_findings(&query(vec![t1.clone()], FindingField::Id, false))
            .await
            .expect("term");
        let want: Vec<String> = (0..30)
            .filter(|i| i % 5 != 0 && i % 4 == 1)
            .map(|i| format!("f{i:02}"))
            .collect();
        assert_eq!(ids(&got), want);
        let not_ssn = FindingTest::NotIn(
            FindingField::Term("detection".into()),
            vec![Scalar::Text("SSN".into())],
        );
        let got = s
            .query_findings(&query(vec![not_ssn], FindingField::Id, false))
            .await
            .expect("not term");
        assert_eq!(ids(&got), ["f00", "f05", "f10", "f15", "f20", "f25"]);
        // Numbers, and the job id that automated findings lack.
        let high = FindingTest::Compare(
            FindingField::SeverityRank,
            vec![Ordering::Greater, Ordering::Equal],
            3,
        );
        let got = s
            .query_findings(&query(vec![high], FindingField::Id, false))
            .await
            .expect("rank");
        assert!(got.iter().all(|(_, f)| f.severity == "HIGH") && got.len() == 10);
        let jobs = s
            .count_findings(&[], &FindingField::JobId)
            .await
            .expect("count");
        assert_eq!(
            jobs,
            vec![
                (Scalar::Text(String::new()), 15),
                (Scalar::Text("job1".into()), 8),
                (Scalar::Text("job3".into()), 7)
            ]
        );
        // Pages in (updated, id) order, descending, follow each other without gaps or repeats.
        let mut paged = Vec::new();
        let mut after = None;
        loop {
            let page = s
                .query_findings(&FindingQuery {
                    tests: vec![],
                    order: FindingField::UpdatedMs,
                    descending: true,
                    after: after.clone(),
                    limit: 4,
                })
                .await
                .expect("page");
            let Some((v, last)) = page.last() else { break };
            after = Some((v.clone(), last.id.clone()));
            paged.extend(ids(&page));
        }
        let mut want: Vec<(i64, String)> = all
            .iter()
            .map(|(f, _)| (f.updated_ms, f.id.clone()))
            .collect();
        want.sort();
        want.reverse();
        assert_eq!(
            paged,
            want.into_iter().map(|(_, id)| id).collect::<Vec<_>>()
        );
        // Archiving sticks when a finding is written again.
        assert_eq!(
            s.archive_findings(&["f01".into(), "f02".into()])
                .await
                .expect("archive"),
            2
        );
        assert_eq!(s.archive_findings(&["f01".into()]).await.expect("again"), 0);
        s.put_findings(&[all[1].clone()]).await.expect("rewrite");
        let archived = FindingTest::In(FindingField::Archived, vec![Scalar::Int(1)]);
        let got = s
            .query_findings(&query(vec![archived], FindingField::Id, false))
            .await
            .expect("archived");
        assert_eq!(ids(&got), ["f01", "f02"]);
        // Terms go with their finding.
        assert_eq!(s.purge_findings(i64::MAX).await.expect("purge"), 30);
        let got = s
            .query_findings(&query(vec![t1], FindingField::Id, false))
            .await
            .expect("term");
        assert!(got.is_empty());
        assert!(
            s.unindexed_findings(10)
                .await
                .expect("unindexed")
                .is_empty()
        );
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
        s.put_findings(&[plain(finding("f1", "a", 10)), plain(finding("f2", "b", 20))])
            .await
            .expect("put");
        let mut later = finding("f1", "a", 30);
        later.severity = "LOW".into();
        s.put_findings(&[plain(later)]).await.expect("replace");
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
