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

    /// Inserts findings, or replaces those with their ids (keeping when each was first created),
    /// all in one transaction.
    async fn put_findings(&self, findings: &[FindingRecord]) -> Result<()>;
    /// Findings, newest first, optionally of one bucket only.
    async fn findings(&self, bucket: Option<&str>) -> Result<Vec<FindingRecord>>;
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
