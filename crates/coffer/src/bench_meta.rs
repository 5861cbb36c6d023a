//! `coffer bench metadata`: the same requests on two Coffers started here, one with its metadata in
//! SQLite (the default) and one in PostgreSQL (`--metadata URL`), in alternating rounds: KMS
//! Encrypt (served from the key cache), ListAliases (a metadata read each time) and TagResource (a
//! metadata write each time), S3 PUT and GET; and the cost of a key-cache miss on each engine (the
//! first Encrypt with a key, which loads and unwraps it, against the second).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use bytes::Bytes;
use clap::Args;
use serde_json::json;

use crate::bench::{
    AuditBenchArgs, Side, check_rounds, compare, create_key, range, start_own_server,
};
use crate::bench_s3::{self, MIB};
use crate::client::{KmsBody, call, connect, kms_call, kms_request, target};

#[derive(Debug, Args)]
pub struct MetaBenchArgs {
    #[command(flatten)]
    rounds: AuditBenchArgs,
    /// An empty PostgreSQL database for the PostgreSQL side (every run needs a new one), e.g.
    /// postgres://coffer@127.0.0.1:5432/coffer_bench.
    #[arg(long, value_name = "URL")]
    postgres: String,
    /// How many keys' first use (a key-cache miss) is timed on each side.
    #[arg(long, default_value_t = 300)]
    miss_keys: usize,
    /// S3 object sizes to PUT and GET, e.g. 4k,1m.
    #[arg(long, value_delimiter = ',', default_values_t = vec!["4k".to_owned(), "1m".to_owned()])]
    sizes: Vec<String>,
}

#[derive(Debug, serde::Serialize)]
struct Row {
    what: String,
    unit: &'static str,
    sqlite: f64,
    postgres: f64,
    /// PostgreSQL / SQLite, median of the per-round ratios.
    ratio: f64,
    ratio_range: (f64, f64),
    sqlite_p99_ms: Option<f64>,
    postgres_p99_ms: Option<f64>,
}

#[derive(Debug, serde::Serialize)]
struct Miss {
    engine: &'static str,
    keys: usize,
    miss_p50_us: f64,
    miss_p90_us: f64,
    hit_p50_us: f64,
    hit_p90_us: f64,
}

/// A KMS request body for `op` on a key made for it on the side's server.
async fn op_side(
    label: &str,
    endpoint: &str,
    dir: &std::path::Path,
    op: &str,
) -> anyhow::Result<Side> {
    let t = Arc::new(target(endpoint, dir, "us-east-1")?);
    let mut setup = connect(&t).await?;
    let key_id = create_key(&t, &mut setup, "coffer bench metadata").await?;
    let body = match op {
        "Encrypt" => KmsBody::new(
            "Encrypt",
            &json!({ "KeyId": key_id, "Plaintext": base64::engine::general_purpose::STANDARD.encode([0x42u8; 256]) }),
        )?,
        "ListAliases" => {
            for i in 0..20 {
                kms_call(
                    &t,
                    &mut setup,
                    "CreateAlias",
                    json!({ "AliasName": format!("alias/bench-{i}-{}", &key_id[..8]), "TargetKeyId": key_id }),
                )
                .await?;
            }
            KmsBody::new("ListAliases", &json!({ "KeyId": key_id }))?
        }
        "TagResource" => KmsBody::new(
            "TagResource",
            &json!({ "KeyId": key_id, "Tags": [{ "TagKey": "bench", "TagValue": "metadata" }] }),
        )?,
        other => bail!("no bench for {other}"),
    };
    Ok(Side::new(label, t, body))
}

/// The first and second Encrypt with each of `n` new keys, one request at a time.
async fn cache_miss(
    engine: &'static str,
    endpoint: &str,
    dir: &std::path::Path,
    n: usize,
) -> anyhow::Result<Miss> {
    let t = target(endpoint, dir, "us-east-1")?;
    let mut sender = connect(&t).await?;
    let mut keys = Vec::with_capacity(n);
    for _ in 0..n {
        keys.push(create_key(&t, &mut sender, "coffer bench metadata miss").await?);
    }
    // CreateKey does not fill the caches: a key (its record and unwrapped material) and its key
    // policy are loaded on first use, which is what a miss after a change notice costs too.
    let (mut miss, mut hit) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for k in &keys {
        let body = KmsBody::new(
            "Encrypt",
            &json!({ "KeyId": k, "Plaintext": base64::engine::general_purpose::STANDARD.encode([7u8; 32]) }),
        )?;
        for out in [&mut miss, &mut hit] {
            let req = kms_request(&t, &body)?;
            let t0 = Instant::now();
            let (status, _) = call(&mut sender, req).await?;
            out.push(t0.elapsed().as_secs_f64() * 1e6);
            if status != 200 {
                bail!("Encrypt on the {engine} server failed: HTTP {status}");
            }
        }
    }
    let pct = |v: &mut Vec<f64>, p: f64| {
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * p) as usize]
    };
    Ok(Miss {
        engine,
        keys: n,
        miss_p50_us: pct(&mut miss, 0.5),
        miss_p90_us: pct(&mut miss, 0.9),
        hit_p50_us: pct(&mut hit, 0.5),
        hit_p90_us: pct(&mut hit, 0.9),
    })
}

pub async fn run(args: MetaBenchArgs) -> anyhow::Result<()> {
    check_rounds(&args.rounds)?;
    if args.miss_keys == 0 {
        bail!("--miss-keys must be at least 1");
    }
    crate::metadata::MetadataSpec::parse(&args.postgres)?;
    let (sqlite_server, sqlite_endpoint, sqlite_dir) = start_own_server(&[])?;
    let (pg_server, pg_endpoint, pg_dir) = start_own_server(&["--metadata", &args.postgres])
        .with_context(|| {
            format!(
                "the PostgreSQL side did not start; is {} an empty database?",
                crate::metadata::redact(&args.postgres)
            )
        })?;
    let json_out = args.rounds.json;
    let mut rows = Vec::new();
    for op in ["Encrypt", "ListAliases", "TagResource"] {
        if !json_out {
            eprintln!("  KMS {op} ...");
        }
        let sides = vec![
            op_side("sqlite", &sqlite_endpoint, &sqlite_dir, op).await?,
            op_side("postgres", &pg_endpoint, &pg_dir, op).await?,
        ];
        let c = compare(&sides, &args.rounds).await?;
        if c.errors > 0 {
            bail!("{} {op} requests failed during the measurement", c.errors);
        }
        rows.push(Row {
            what: format!(
                "KMS {op}{}",
                match op {
                    "Encrypt" => " (key cached)",
                    "ListAliases" => " (a metadata read)",
                    _ => " (a metadata write)",
                }
            ),
            unit: "ops/s",
            sqlite: c.rates[0],
            postgres: c.rates[1],
            ratio: crate::bench::median(c.ratios[1].clone()).unwrap_or(0.0),
            ratio_range: range(&c.ratios[1]),
            sqlite_p99_ms: Some(c.p99[0]),
            postgres_p99_ms: Some(c.p99[1]),
        });
    }

    let s3_sides = [
        bench_s3::side_on("sqlite", &sqlite_endpoint, &sqlite_dir).await?,
        bench_s3::side_on("postgres", &pg_endpoint, &pg_dir).await?,
    ];
    let duration = Duration::from_secs_f64(args.rounds.duration);
    let clients = 8;
    for size_text in &args.sizes {
        let size = bench_s3::parse_size(size_text)?;
        let mut body = vec![0u8; size];
        coffer_crypto::fill_random(&mut body).context("random body")?;
        let body = Bytes::from(body);
        for put in [true, false] {
            let op = if put { "PUT" } else { "GET" };
            if !json_out {
                eprintln!("  S3 {op} {size_text} ...");
            }
            if !put {
                for s in &s3_sides {
                    bench_s3::populate(&s.target, size, &body, clients).await?;
                }
            }
            let (mut rates, mut ratios) = ([Vec::new(), Vec::new()], Vec::new());
            for round in 0..args.rounds.rounds {
                let mut this = [0.0; 2];
                for k in 0..2 {
                    let i = (round + k) % 2;
                    let (rate, errors) =
                        bench_s3::measure(&s3_sides[i].target, size, &body, put, clients, duration)
                            .await?;
                    if errors > 0 {
                        bail!("{errors} S3 {op} requests failed during the measurement");
                    }
                    this[i] = rate / MIB;
                    rates[i].push(this[i]);
                }
                if this[0] > 0.0 {
                    ratios.push(this[1] / this[0]);
                }
            }
            let [sq, pg] = rates;
            rows.push(Row {
                what: format!("S3 {op} {size_text}"),
                unit: "MiB/s",
                sqlite: crate::bench::median(sq).unwrap_or(0.0),
                postgres: crate::bench::median(pg).unwrap_or(0.0),
                ratio: crate::bench::median(ratios.clone()).unwrap_or(0.0),
                ratio_range: range(&ratios),
                sqlite_p99_ms: None,
                postgres_p99_ms: None,
            });
        }
    }

    if !json_out {
        eprintln!("  key-cache misses ...");
    }
    let misses = vec![
        cache_miss("sqlite", &sqlite_endpoint, &sqlite_dir, args.miss_keys).await?,
        cache_miss("postgres", &pg_endpoint, &pg_dir, args.miss_keys).await?,
    ];
    drop(pg_server);
    drop(sqlite_server);

    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "clients": args.rounds.clients,
                "rounds": args.rounds.rounds,
                "duration_seconds": args.rounds.duration,
                "rows": rows,
                "key_cache_miss": misses,
            }))?
        );
        return Ok(());
    }
    println!(
        "{:<36} {:>7} {:>11} {:>11} {:>18} {:>15}",
        "", "unit", "SQLite", "PostgreSQL", "PG/SQLite (range)", "p99 ms SQ/PG"
    );
    for r in &rows {
        let p99 = match (r.sqlite_p99_ms, r.postgres_p99_ms) {
            (Some(a), Some(b)) => format!("{a:.1} / {b:.1}"),
            _ => String::new(),
        };
        let digits = if r.sqlite < 100.0 { 1 } else { 0 };
        println!(
            "{:<36} {:>7} {:>11.digits$} {:>11.digits$} {:>18} {:>15}",
            r.what,
            r.unit,
            r.sqlite,
            r.postgres,
            format!(
                "{:.2} ({:.2}–{:.2})",
                r.ratio, r.ratio_range.0, r.ratio_range.1
            ),
            p99
        );
    }
    println!();
    println!(
        "key-cache miss (first Encrypt with a key) vs hit (the second), one request at a time:"
    );
    for m in &misses {
        println!(
            "  {:<10} miss p50 {:>6.0} µs  p90 {:>6.0} µs   hit p50 {:>6.0} µs  p90 {:>6.0} µs   a miss costs {:.0} µs more",
            m.engine,
            m.miss_p50_us,
            m.miss_p90_us,
            m.hit_p50_us,
            m.hit_p90_us,
            m.miss_p50_us - m.hit_p50_us
        );
    }
    Ok(())
}
