//! The engines every metadata test runs on: SQLite in memory always, and PostgreSQL when
//! `COFFER_TEST_POSTGRES` names a server (`scripts/test.sh` starts one). Under CI the PostgreSQL
//! run is required, so the suite cannot pass by skipping it.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::{KeyRecord, SqlStore};

/// TLS settings for the test server, which speaks none (the URL's default `sslmode=prefer` then
/// connects in the clear); TLS itself is tested through the binary.
pub(crate) fn plain_tls() -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth()
}

/// A key record with the defaults CreateKey gives.
pub(crate) fn key(id: &str) -> KeyRecord {
    KeyRecord {
        custom_key_store_id: None,
        key_id: id.into(),
        created_ms: 1,
        description: String::new(),
        key_usage: "ENCRYPT_DECRYPT".into(),
        key_spec: "SYMMETRIC_DEFAULT".into(),
        origin: "AWS_KMS".into(),
        key_manager: "CUSTOMER".into(),
        state: "Enabled".into(),
        deletion_ms: None,
        pending_window_days: None,
        rotation_enabled: false,
        rotation_period_days: None,
        next_rotation_ms: None,
        current_version: 1,
        expiration_model: None,
        valid_to_ms: None,
        import_fingerprint: None,
    }
}

/// A fresh store on each engine; each PostgreSQL store lives in a schema of its own.
pub(crate) async fn stores() -> Vec<SqlStore> {
    let mut out = vec![SqlStore::in_memory().expect("SQLite in memory")];
    if let Some(url) = postgres_url() {
        out.push(postgres_store(&url).await);
    }
    out
}

/// A store in a new, empty schema of the test database.
pub(crate) async fn postgres_store(url: &str) -> SqlStore {
    let url = new_schema(url).await;
    SqlStore::connect_postgres(&url, 4, plain_tls())
        .await
        .expect("open the PostgreSQL store")
}

/// The test server's URL, if any (required under CI).
pub(crate) fn postgres_url() -> Option<String> {
    match std::env::var("COFFER_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "COFFER_TEST_POSTGRES is not set: under CI the metadata tests must also run on PostgreSQL"
            );
            None
        }
    }
}

/// A URL whose connections work in a new, empty schema of the test database.
pub(crate) async fn new_schema(url: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let schema = format!(
        "t{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    );
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test PostgreSQL");
    let task = tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .expect("create a test schema");
    drop(client);
    let _ = task.await;
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-c%20search_path%3D{schema}%2Cpublic")
}

/// Several nodes on one PostgreSQL database: what the database, not a node, must enforce.
mod shared {
    use std::sync::Arc;
    use std::time::Duration;

    use super::{key, new_schema, postgres_url};
    use crate::{AliasRecord, Change, MaterialRecord, MetaError, MetaStore, SqlStore};

    /// Two "nodes" (separate pools) on one schema.
    async fn two_nodes() -> Option<(Arc<SqlStore>, Arc<SqlStore>)> {
        let url = new_schema(&postgres_url()?).await;
        let a = SqlStore::connect_postgres(&url, 8, super::plain_tls())
            .await
            .expect("node a");
        let b = SqlStore::connect_postgres(&url, 8, super::plain_tls())
            .await
            .expect("node b");
        Some((Arc::new(a), Arc::new(b)))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn nodes_starting_together_migrate_the_schema_once() {
        let Some(base) = postgres_url() else {
            return;
        };
        let url = new_schema(&base).await;
        let starts: Vec<_> = (0..4)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move {
                    SqlStore::connect_postgres(&url, 2, super::plain_tls()).await
                })
            })
            .collect();
        let mut stores = Vec::new();
        for s in starts {
            stores.push(s.await.expect("task").expect("every node starts"));
        }
        // Each version applied once, and every node works on the result.
        let applied: i64 = stores[0]
            .tx(|t| t.query_scalar("SELECT COUNT(*) FROM schema_migrations", &[]))
            .await
            .expect("count");
        let newest: i64 = stores[0]
            .tx(|t| t.query_scalar("SELECT MAX(version) FROM schema_migrations", &[]))
            .await
            .expect("max");
        assert_eq!(applied, newest);
        for (i, s) in stores.iter().enumerate() {
            s.create_key(&key(&format!("k{i}")), None, &[], "{}")
                .await
                .expect("use");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn one_node_at_a_time_holds_a_cluster_lock() {
        let Some((a, b)) = two_nodes().await else {
            return;
        };
        let held = a
            .try_cluster_lock("jobs")
            .await
            .expect("try")
            .expect("free");
        assert!(b.try_cluster_lock("jobs").await.expect("try").is_none());
        assert!(b.try_cluster_lock("other").await.expect("try").is_some());
        // A waiter gets it once the holder lets go (released in the background).
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.cluster_lock("jobs").await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!waiter.is_finished());
        drop(held);
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("handed over")
            .expect("task")
            .expect("lock");
        assert!(a.try_cluster_lock("jobs").await.expect("try").is_none());
        drop(got);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_create_alias_has_exactly_one_winner() {
        let Some((a, b)) = two_nodes().await else {
            return;
        };
        for (id, node) in [("k1", &a), ("k2", &b)] {
            node.create_key(
                &key(id),
                Some(&MaterialRecord::generated(id, 1, vec![1; 8], 1, None)),
                &[],
                "{}",
            )
            .await
            .expect("key");
        }
        for round in 0..20 {
            let name = format!("alias/race-{round}");
            let mut tasks = Vec::new();
            for (i, node) in [&a, &b, &a, &b].into_iter().enumerate() {
                let node = node.clone();
                let alias = AliasRecord {
                    name: name.clone(),
                    target_key_id: if i % 2 == 0 { "k1" } else { "k2" }.into(),
                    created_ms: 1,
                    updated_ms: 1,
                };
                tasks.push(tokio::spawn(async move { node.create_alias(&alias).await }));
            }
            let mut won = 0;
            for t in tasks {
                match t.await.expect("task") {
                    Ok(()) => won += 1,
                    Err(MetaError::AlreadyExists(n)) => assert_eq!(n, name),
                    Err(e) => panic!("unexpected error: {e}"),
                }
            }
            assert_eq!(won, 1, "round {round}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_puts_of_one_key_leave_one_latest_version() {
        let Some((a, b)) = two_nodes().await else {
            return;
        };
        use crate::objects::{BucketRecord, ListQuery, ObjectMeta, ObjectRecord, SseRecord};
        a.create_bucket(&BucketRecord {
            name: "b".into(),
            owner_account: "111122223333".into(),
            region: "us-east-1".into(),
            created_ms: 1,
            versioning: "Enabled".into(),
        })
        .await
        .expect("bucket");
        let mut tasks = Vec::new();
        for i in 0..40 {
            let node = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                let o = ObjectRecord {
                    bucket: "b".into(),
                    key: "k".into(),
                    version_id: format!("v{i}"),
                    is_latest: true,
                    delete_marker: false,
                    size: 1,
                    etag: "\"e\"".into(),
                    last_modified_ms: 1,
                    blob: Some(format!("blob{i}")),
                    parts: Vec::new(),
                    sse: SseRecord::default(),
                    attrs: "{}".into(),
                    tags: "{}".into(),
                };
                node.put_object(&o, false).await
            }));
        }
        for t in tasks {
            t.await.expect("task").expect("put");
        }
        let versions = a
            .list_object_versions("b", "", None, 100)
            .await
            .expect("versions");
        assert_eq!(versions.items.len(), 40);
        assert_eq!(versions.items.iter().filter(|o| o.is_latest).count(), 1);
        // The latest is the newest by sequence, which lists first.
        assert!(versions.items[0].is_latest);
        let listed = b
            .list_objects(
                "b",
                &ListQuery {
                    prefix: "",
                    after: None,
                    limit: 10,
                },
            )
            .await
            .expect("list");
        assert_eq!(listed.items.len(), 1);
        assert_eq!(listed.items[0].version_id, versions.items[0].version_id);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_change_on_one_node_reaches_the_other_within_a_second() {
        let Some((a, b)) = two_nodes().await else {
            return;
        };
        a.create_key(
            &key("k"),
            Some(&MaterialRecord::generated("k", 1, vec![1; 8], 1, None)),
            &[],
            "{}",
        )
        .await
        .expect("key");
        let mut changes = b
            .watch_changes(Duration::from_secs(60))
            .expect("postgres watches")
            .subscribe();
        // The listener announces itself with a full flush once it listens.
        let first = tokio::time::timeout(Duration::from_secs(5), changes.recv())
            .await
            .expect("listening")
            .expect("open");
        assert_eq!(first, Change::All);
        let mut disabled = key("k");
        disabled.state = "Disabled".into();
        let sent = std::time::Instant::now();
        a.update_key(&disabled).await.expect("disable");
        let got = tokio::time::timeout(Duration::from_secs(1), changes.recv())
            .await
            .expect("the notice arrives within a second")
            .expect("open");
        assert_eq!(got, Change::Key("k".into()));
        assert!(sent.elapsed() < Duration::from_secs(1));
        // A transaction that fails sends nothing.
        assert!(a.update_key(&key("missing")).await.is_err());
        a.put_key_policy("k", "{}", 2).await.expect("policy");
        let got = tokio::time::timeout(Duration::from_secs(1), changes.recv())
            .await
            .expect("notice")
            .expect("open");
        assert_eq!(got, Change::Key("k".into()));
    }
}
