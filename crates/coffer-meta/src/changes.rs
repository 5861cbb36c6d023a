//! Change notices between nodes that share one PostgreSQL database.
//!
//! Each node caches what it reads on every request (keys with their unwrapped material, key and
//! identity policies, credentials, bucket policies). A transaction that changes one of these
//! sends a notice with PostgreSQL's `NOTIFY`, delivered to every node when (and only if) the
//! transaction commits; each node's listener turns it into a [`Change`] its caches act on. As a
//! bound on staleness whatever happens to notices (a listener reconnecting, a load that raced a
//! change), every node also forgets everything at a fixed interval. On SQLite (one node) nothing
//! is sent: the node's own caches are cleared by the code that makes each change.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::broadcast;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::Result;
use crate::sql::{Dialect, SqlStore, Tx, p};

/// The channel name of the notices.
const CHANNEL: &str = "coffer_changes";

/// What a node may hold a stale copy of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A key's record, material, state or key policy (and aliases that point at it).
    Key(String),
    /// Where an alias points.
    Alias(String),
    /// An access key's status or secret, or its deletion.
    AccessKey(String),
    /// Users, groups, memberships or inline policies.
    Iam,
    /// A bucket's policy, public access block or versioning, or its deletion.
    Bucket(String),
    /// Notices may have been missed, or the staleness bound came round: forget everything.
    All,
}

impl Change {
    fn encode(&self) -> String {
        match self {
            Change::Key(id) => format!("key:{id}"),
            Change::Alias(name) => format!("alias:{name}"),
            Change::AccessKey(id) => format!("access-key:{id}"),
            Change::Iam => "iam".into(),
            Change::Bucket(name) => format!("bucket:{name}"),
            Change::All => "all".into(),
        }
    }

    /// Unknown notices (from a newer node) mean "forget everything", which is always safe.
    fn decode(text: &str) -> Change {
        match text.split_once(':') {
            Some(("key", id)) => Change::Key(id.into()),
            Some(("alias", name)) => Change::Alias(name.into()),
            Some(("access-key", id)) => Change::AccessKey(id.into()),
            Some(("bucket", name)) => Change::Bucket(name.into()),
            _ if text == "iam" => Change::Iam,
            _ => Change::All,
        }
    }
}

/// Sends a notice with the transaction (PostgreSQL delivers it on commit); nothing on SQLite.
pub(crate) fn notify(t: &mut dyn Tx, change: Change) -> Result<()> {
    if t.dialect() == Dialect::Postgres {
        t.execute("SELECT pg_notify(?1, ?2)", &p![CHANNEL, change.encode()])?;
    }
    Ok(())
}

impl SqlStore {
    /// With PostgreSQL, starts listening for the changes other nodes (and this one) make; each
    /// subscriber of the returned sender gets them, with a [`Change::All`] every `staleness` and
    /// whenever notices may have been lost. `None` on SQLite, where there are no other nodes.
    /// The listener runs for the life of the process.
    pub fn watch_changes(&self, staleness: Duration) -> Option<broadcast::Sender<Change>> {
        let (url, tls) = self.postgres_connection()?;
        let (url, tls) = (url.to_owned(), tls.clone());
        let (tx, _) = broadcast::channel(4096);
        tokio::spawn(listen(url, tls, tx.clone(), staleness));
        Some(tx)
    }
}

/// Keeps a `LISTEN` connection, reconnecting with backoff. (A send finds no subscriber while a
/// node is sealed; that is fine.)
async fn listen(
    url: String,
    tls: MakeRustlsConnect,
    tx: broadcast::Sender<Change>,
    staleness: Duration,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let e = listen_once(&url, &tls, &tx, staleness).await;
        tracing::warn!(error = %e, "the change listener lost PostgreSQL; caches are cleared until it is back");
        // Whatever happened meanwhile was not heard: forget everything.
        let _ = tx.send(Change::All);
        tokio::time::sleep(backoff.min(staleness)).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Listens until the connection fails; returns why.
async fn listen_once(
    url: &str,
    tls: &MakeRustlsConnect,
    tx: &broadcast::Sender<Change>,
    staleness: Duration,
) -> String {
    let (client, mut conn) = match tokio_postgres::connect(url, tls.clone()).await {
        Ok(c) => c,
        Err(e) => return crate::sql::connect_hint(crate::sql::with_causes(&e)),
    };
    let (msg_tx, mut msgs) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(m) = stream.next().await {
            match m {
                Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                    if msg_tx.send(Ok(n.payload().to_owned())).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = msg_tx.send(Err(e.to_string()));
                    return;
                }
            }
        }
        let _ = msg_tx.send(Err("the connection closed".into()));
    });
    let run = async {
        if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
            return e.to_string();
        }
        tracing::debug!("listening for metadata changes from other nodes");
        // Anything before LISTEN took effect was not heard.
        let _ = tx.send(Change::All);
        let mut tick = tokio::time::interval(staleness);
        tick.tick().await;
        loop {
            tokio::select! {
                m = msgs.recv() => match m {
                    Some(Ok(payload)) => {
                        let _ = tx.send(Change::decode(&payload));
                    }
                    Some(Err(e)) => return e,
                    None => return "the connection closed".into(),
                },
                _ = tick.tick() => {
                    // The bound on staleness, whatever happened to notices.
                    let _ = tx.send(Change::All);
                    // A connection that silently died would hear nothing: check it answers.
                    match tokio::time::timeout(staleness, client.simple_query("SELECT 1")).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return e.to_string(),
                        Err(_) => return "PostgreSQL did not answer in time".into(),
                    }
                }
            }
        }
    };
    let out = run.await;
    driver.abort();
    out
}

#[cfg(test)]
mod tests {
    use super::Change;

    #[test]
    fn notices_round_trip() {
        for c in [
            Change::Key("1234abcd-12ab-34cd-56ef-1234567890ab".into()),
            Change::Alias("alias/a:b".into()),
            Change::AccessKey("AKIAEXAMPLE".into()),
            Change::Iam,
            Change::Bucket("b".into()),
            Change::All,
        ] {
            assert_eq!(Change::decode(&c.encode()), c);
        }
        assert_eq!(Change::decode("something-new:x"), Change::All);
    }
}
