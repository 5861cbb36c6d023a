//! `coffer bench findings`: ListFindings and GetFindingStatistics over many stored findings,
//! answered as the server answers them (criteria and order in the database, pages by keyset),
//! beside the same requests answered by reading and checking every finding (how Coffer answered
//! them before findings were indexed), in alternating rounds. The findings are made up, of the
//! shape the server stores, and written through the metadata store the server uses (SQLite in a
//! temporary directory, or PostgreSQL); every indexed answer is checked against the slow one.

use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use coffer_meta::{DiscoveryMeta, SqlStore};
use serde_json::{Value, json};

use crate::bench::median;

#[derive(Debug, Args)]
pub struct FindingsBenchArgs {
    /// How many findings to store.
    #[arg(long, default_value_t = 100_000)]
    findings: u64,
    /// Rounds; each times every request both ways (alternating which goes first).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Time only the indexed answers (for stores too large to read whole at every request).
    #[arg(long)]
    no_baseline: bool,
    /// An empty PostgreSQL database to store the findings in instead of SQLite, e.g.
    /// postgres://coffer@127.0.0.1:5432/coffer_bench.
    #[arg(long, value_name = "URL")]
    postgres: Option<String>,
    /// Keep the SQLite database in this directory (which must not hold one yet), e.g. to look
    /// at its query plans afterwards.
    #[arg(long, value_name = "DIR", conflicts_with = "postgres")]
    sqlite_dir: Option<std::path::PathBuf>,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// One request to time: a ListFindings input (or statistics), and which page of it.
struct Case {
    what: &'static str,
    input: Value,
    /// The page timed (0 is the first); earlier pages are walked untimed to get its token.
    page: usize,
    statistics: bool,
}

fn cases() -> Vec<Case> {
    let list = |what, input, page| Case {
        what,
        input,
        page,
        statistics: false,
    };
    vec![
        list("first page, newest first", json!({}), 0),
        list(
            "High and not archived, oldest first",
            json!({ "findingCriteria": { "criterion": {
                "severity.description": { "eq": ["High"] }, "archived": { "eq": ["false"] } } },
                "sortCriteria": { "attributeName": "createdAt", "orderBy": "ASC" } }),
            0,
        ),
        list(
            "card numbers in one bucket, by key",
            json!({ "findingCriteria": { "criterion": {
                "classificationDetails.result.sensitiveData.detections.type": { "eq": ["CREDIT_CARD_NUMBER"] },
                "resourcesAffected.s3Bucket.name": { "eq": ["b"] } } },
                "sortCriteria": { "attributeName": "resourcesAffected.s3Object.key", "orderBy": "ASC" } }),
            0,
        ),
        list(
            "20th page of one job's findings",
            json!({ "findingCriteria": { "criterion": {
                "classificationDetails.jobId": { "eq": ["j2"] } } } }),
            19,
        ),
        list(
            "a criterion not indexed (count > 2)",
            json!({ "findingCriteria": { "criterion": { "count": { "gt": 2 } } } }),
            0,
        ),
        Case {
            what: "statistics by type, not archived",
            input: json!({ "groupBy": "type",
                "findingCriteria": { "criterion": { "archived": { "eq": ["false"] } } } }),
            page: 0,
            statistics: true,
        },
    ]
}

#[derive(Debug, serde::Serialize)]
struct Row {
    what: &'static str,
    indexed_ms: f64,
    reading_all_ms: Option<f64>,
    /// Reading all / indexed, median of the per-round ratios.
    speedup: Option<f64>,
}

pub fn run(args: FindingsBenchArgs) -> anyhow::Result<()> {
    if args.rounds == 0 || args.findings == 0 {
        bail!("--rounds and --findings must be at least 1");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(bench(args))
}

async fn bench(args: FindingsBenchArgs) -> anyhow::Result<()> {
    let temp = tempfile::tempdir().context("cannot make a temporary directory")?;
    let dir = args
        .sqlite_dir
        .clone()
        .unwrap_or_else(|| temp.path().to_owned());
    if dir.join("meta.db").exists() {
        bail!(
            "{} already holds a database; give an empty directory",
            dir.display()
        );
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot make {}", dir.display()))?;
    let store = match &args.postgres {
        None => SqlStore::open_sqlite(&dir.join("meta.db"))?,
        Some(url) => {
            let tls = crate::tls::client_config(None)?;
            SqlStore::connect_postgres(url, 4, tls)
                .await
                .context("cannot open the PostgreSQL database")?
        }
    };
    let meta: &dyn DiscoveryMeta = &store;
    if !args.json {
        eprintln!(
            "storing {} findings ({})…",
            args.findings,
            if args.postgres.is_some() {
                "PostgreSQL"
            } else {
                "SQLite"
            }
        );
    }
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut seed = 0;
    while seed < args.findings {
        let end = (seed + 1000).min(args.findings);
        let batch: Vec<_> = (seed..end)
            .map(|s| {
                let r = coffer_api::macie::synthetic_finding(s);
                let doc: Value = serde_json::from_str(&r.doc).unwrap_or_default();
                let terms = coffer_api::macie::finding_terms(&doc);
                (r, terms)
            })
            .collect();
        meta.put_findings(&batch).await?;
        seed = end;
        if !args.json && last_report.elapsed().as_secs() >= 5 {
            eprintln!("  {seed} stored");
            last_report = Instant::now();
        }
    }
    let store_secs = started.elapsed().as_secs_f64();
    // As the server does hourly.
    meta.optimize_findings().await?;
    let db_bytes = if args.postgres.is_none() {
        std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum::<u64>()
    } else {
        0
    };

    let cases = cases();
    let mut indexed: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut slow: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for round in 0..args.rounds {
        for (i, case) in cases.iter().enumerate() {
            // The token of the timed page, from the pages before it (untimed).
            let mut input = case.input.clone();
            for _ in 0..case.page {
                let out = coffer_api::macie::list_findings(meta, &input)
                    .await
                    .map_err(|e| anyhow::anyhow!("ListFindings: {e:?}"))?;
                input["nextToken"] = out["nextToken"].clone();
            }
            let indexed_first = round % 2 == 0 || args.no_baseline;
            let mut answers = (None, None);
            for side in 0..if args.no_baseline { 1 } else { 2 } {
                let fast = (side == 0) == indexed_first;
                let t = Instant::now();
                if fast {
                    let out = if case.statistics {
                        coffer_api::macie::finding_statistics(meta, &input).await
                    } else {
                        coffer_api::macie::list_findings(meta, &input).await
                    }
                    .map_err(|e| anyhow::anyhow!("{}: {e:?}", case.what))?;
                    indexed[i].push(t.elapsed().as_secs_f64() * 1000.0);
                    answers.0 = Some(out);
                } else {
                    let ids = coffer_api::macie::list_by_reading_all(meta, &case.input, case.page)
                        .await
                        .map_err(|e| anyhow::anyhow!("{}: {e:?}", case.what))?;
                    slow[i].push(t.elapsed().as_secs_f64() * 1000.0);
                    answers.1 = Some(ids);
                }
            }
            if let (Some(fast), Some(ids)) = answers
                && !case.statistics
                && fast["findingIds"] != json!(ids)
            {
                bail!(
                    "{}: the indexed answer differs from reading every finding",
                    case.what
                );
            }
        }
    }

    let rows: Vec<Row> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let ratios: Vec<f64> = slow[i]
                .iter()
                .zip(&indexed[i])
                .map(|(s, f)| s / f.max(1e-6))
                .collect();
            Row {
                what: c.what,
                indexed_ms: median(indexed[i].clone()).unwrap_or_default(),
                reading_all_ms: median(slow[i].clone()),
                speedup: median(ratios),
            }
        })
        .collect();
    let per_finding = db_bytes as f64 / args.findings as f64;
    if args.json {
        println!(
            "{}",
            json!({
                "findings": args.findings,
                "engine": if args.postgres.is_some() { "postgres" } else { "sqlite" },
                "store_findings_per_s": args.findings as f64 / store_secs,
                "sqlite_bytes_per_finding": (args.postgres.is_none()).then_some(per_finding),
                "rounds": args.rounds,
                "requests": rows,
            })
        );
        return Ok(());
    }
    println!(
        "{} findings stored in {:.1} s ({:.0}/s){}",
        args.findings,
        store_secs,
        args.findings as f64 / store_secs,
        if args.postgres.is_none() {
            format!(", {per_finding:.0} bytes each in SQLite")
        } else {
            String::new()
        }
    );
    println!(
        "{:<40} {:>12} {:>16} {:>9}",
        "request (median of rounds)", "indexed ms", "reading all ms", "speedup"
    );
    for r in &rows {
        println!(
            "{:<40} {:>12.2} {:>16} {:>9}",
            r.what,
            r.indexed_ms,
            r.reading_all_ms.map_or("-".into(), |v| format!("{v:.1}")),
            r.speedup.map_or("-".into(), |v| format!("{v:.0}×")),
        );
    }
    if !args.no_baseline {
        println!("every indexed page matched the page read the slow way");
    }
    Ok(())
}
