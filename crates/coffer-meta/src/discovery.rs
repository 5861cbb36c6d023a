//! Metadata of sensitive-data discovery: classification jobs, the findings they and automated
//! discovery produce, and discovery settings. Jobs and findings are kept as the JSON documents the
//! API serves (Macie's shapes), with the columns that listing and filtering need beside them.

use async_trait::async_trait;

use crate::Result;

/// A classification job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    pub id: String,
    /// The caller's idempotency token: a second create with the same token returns this job.
    pub client_token: String,
    pub created_ms: i64,
    /// Macie's `jobStatus`: RUNNING, PAUSED, CANCELLED, COMPLETE, IDLE, USER_PAUSED.
    pub status: String,
    /// The job as DescribeClassificationJob returns it, with Coffer's run state.
    pub doc: String,
}

/// A finding about one object version, from one job or from automated discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindingRecord {
    /// Derived from what the finding is about, so that classifying the same object version again
    /// in the same job updates the finding instead of adding one.
    pub id: String,
    pub bucket: String,
    pub key: String,
    /// `LOW`, `MEDIUM` or `HIGH`.
    pub severity: String,
    pub finding_type: String,
    /// The job id, or `AUTOMATED` for automated discovery, or `ANOMALY` for an access alert.
    pub origin: String,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub archived: bool,
    /// The finding as GetFindings returns it.
    pub doc: String,
}

/// What a finding is indexed under besides its columns: `(field, value)` pairs, one per value of
/// each indexed field (a finding can hold several detection types, tags, …). The caller chooses the
/// fields; the store only matches them.
pub type FindingTerms = Vec<(String, String)>;

/// A property of a finding that the store can test and order by. Absent values (no bucket for
/// an access alert, no job for automated discovery) are NULL: an `In` test never matches them, a
/// `NotIn` test always does, a comparison never does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FindingField {
    Id,
    /// The bucket; absent where it is empty.
    Bucket,
    /// The object key; absent where it is empty.
    Key,
    /// `LOW`, `MEDIUM` or `HIGH`.
    Severity,
    /// The severity as a number: 1 low, 2 medium, 3 high.
    SeverityRank,
    FindingType,
    /// The origin where it is a job id; absent for automated discovery and access alerts.
    JobId,
    CreatedMs,
    UpdatedMs,
    /// 1 or 0.
    Archived,
    /// An indexed field (see [`FindingTerms`]): the test holds where any of its values does.
    Term(String),
}

impl FindingField {
    /// Whether findings can be ordered by it (a term has many values, so none can).
    pub fn sortable(&self) -> bool {
        !matches!(self, FindingField::Term(_))
    }
}

/// A value in a test or a position in an order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scalar {
    Int(i64),
    Text(String),
}

/// One test of a finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FindingTest {
    /// The field has one of these values.
    In(FindingField, Vec<Scalar>),
    /// The field has none of these values (or none at all).
    NotIn(FindingField, Vec<Scalar>),
    /// The field (a number) compares so with the bound: `Greater`, `Less` or `Equal` are in
    /// the allowed orderings (`gte` is `[Greater, Equal]`).
    Compare(FindingField, Vec<std::cmp::Ordering>, i64),
}

/// A page of findings that pass every test, in order of one field then id (both ascending or
/// both descending), starting after `after` (the sort value and id of the previous page's last
/// finding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindingQuery {
    pub tests: Vec<FindingTest>,
    /// A sortable field.
    pub order: FindingField,
    pub descending: bool,
    pub after: Option<(Scalar, String)>,
    pub limit: usize,
}

/// Each method is one transaction.
#[async_trait]
pub trait DiscoveryMeta: Send + Sync {
    /// `AlreadyExists` when the id or the client token is taken.
    async fn create_job(&self, job: &JobRecord) -> Result<()>;
    async fn job(&self, id: &str) -> Result<Option<JobRecord>>;
    async fn job_by_token(&self, client_token: &str) -> Result<Option<JobRecord>>;
    /// Every job, newest first.
    async fn jobs(&self) -> Result<Vec<JobRecord>>;
    /// Replaces a job's status and document; `NotFound` when it is gone.
    async fn update_job(&self, job: &JobRecord) -> Result<()>;

    /// Inserts findings with their terms, or replaces those with their ids (keeping when each was
    /// first created, and keeping an archived finding archived), all in one transaction.
    async fn put_findings(&self, findings: &[(FindingRecord, FindingTerms)]) -> Result<()>;
    /// Findings, newest first, optionally of one bucket only.
    async fn findings(&self, bucket: Option<&str>) -> Result<Vec<FindingRecord>>;
    /// One page of a query, each finding with its value of the query's order field.
    async fn query_findings(&self, query: &FindingQuery) -> Result<Vec<(Scalar, FindingRecord)>>;
    /// How many findings pass every test, per value of `group` (a sortable field; absent
    /// values are counted under an empty text).
    async fn count_findings(
        &self,
        tests: &[FindingTest],
        group: &FindingField,
    ) -> Result<Vec<(Scalar, u64)>>;
    /// Marks these findings archived; how many were not archived before.
    async fn archive_findings(&self, ids: &[String]) -> Result<u64>;
    /// Findings written before their terms were indexed (by an older Coffer), at most `limit`.
    async fn unindexed_findings(&self, limit: usize) -> Result<Vec<FindingRecord>>;
    /// Refreshes what the query planner knows of the findings tables, where the engine must be
    /// told (SQLite's `ANALYZE`; PostgreSQL's autovacuum does it by itself).
    async fn optimize_findings(&self) -> Result<()>;
    /// Replaces the terms of findings, marking them indexed.
    async fn index_findings(&self, terms: &[(String, FindingTerms)]) -> Result<()>;
    /// The findings with these ids (those that exist).
    async fn findings_by_id(&self, ids: &[String]) -> Result<Vec<FindingRecord>>;
    /// Deletes the findings last updated before `updated_before_ms` (retention); how many.
    async fn purge_findings(&self, updated_before_ms: i64) -> Result<u64>;

    /// A discovery setting (a JSON document), by name.
    async fn discovery_setting(&self, name: &str) -> Result<Option<String>>;
    async fn put_discovery_setting(&self, name: &str, value: &str) -> Result<()>;
    /// Every setting whose name starts with `prefix`, by name.
    async fn discovery_settings_under(&self, prefix: &str) -> Result<Vec<(String, String)>>;
    /// `NotFound` when there is no such setting.
    async fn delete_discovery_setting(&self, name: &str) -> Result<()>;
}
