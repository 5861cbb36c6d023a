//! `coffer bench discovery`: a classification job over a bucket of generated mixed-text objects on
//! a Coffer started here — objects read with the job creator's authority, decrypted, scanned,
//! findings stored, every read audited — beside the same objects scanned in this process on every
//! core (the ceiling: scanning alone), in alternating rounds.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

use crate::bench::start_own_server;
use crate::client::{self, Target, connect_as, s3_headers, target};

#[derive(Debug, Args)]
pub struct DiscoveryBenchArgs {
    /// Objects in the bucket.
    #[arg(long, default_value_t = 800)]
    objects: usize,
    /// Size of each object, in KiB.
    #[arg(long, default_value_t = 128)]
    kib: usize,
    /// Rounds of each side; the medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn put(t: &Target, path: &str, body: Bytes) -> anyhow::Result<()> {
    let mut sender = connect_as::<Full<Bytes>>(t).await?;
    let len = body.len();
    let mut req = hyper::Request::put(path).body(Full::new(body))?;
    *req.headers_mut() = s3_headers(t, "PUT", path, None)?;
    req.headers_mut()
        .insert("content-length", http::HeaderValue::from(len));
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let _ = resp.into_body().collect().await;
    if !status.is_success() {
        bail!("PUT {path} failed: HTTP {status}");
    }
    Ok(())
}

async fn macie(t: &Target, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
    let mut sender = client::connect(t).await?;
    let (status, bytes) = client::call(
        &mut sender,
        client::macie_request(t, method, path, body.as_ref())?,
    )
    .await?;
    let v: Value = serde_json::from_slice(&bytes).context("the server's answer is not JSON")?;
    if status != 200 {
        bail!("{method} {path} failed ({status}): {v}");
    }
    Ok(v)
}

/// Seconds for one job over the bucket, from CreateClassificationJob to COMPLETE.
async fn job_round(t: &Target, account: &str, round: usize) -> anyhow::Result<(f64, Value)> {
    let started = Instant::now();
    let created = macie(
        t,
        "POST",
        "/jobs",
        Some(json!({
            "clientToken": format!("bench-{round}-{}", uuid::Uuid::new_v4()),
            "name": format!("bench {round}"),
            "jobType": "ONE_TIME",
            "s3JobDefinition": { "bucketDefinitions": [{ "accountId": account, "buckets": ["bench"] }] },
        })),
    )
    .await?;
    let id = created["jobId"].as_str().unwrap_or_default().to_owned();
    loop {
        let job = macie(t, "GET", &format!("/jobs/{id}"), None).await?;
        match job["jobStatus"].as_str() {
            Some("RUNNING") => tokio::time::sleep(Duration::from_millis(10)).await,
            Some("COMPLETE") => return Ok((started.elapsed().as_secs_f64(), job)),
            other => bail!("the job ended {other:?}: {job}"),
        }
    }
}

/// Seconds to scan every object in this process, on every core.
fn local_round(texts: &[String]) -> f64 {
    let scanner = coffer_scan::Scanner::managed();
    let limits = coffer_scan::Limits::default();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let started = Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(text) = texts.get(i) else { break };
                    let _ = coffer_scan::read::scan_bytes(
                        &scanner,
                        &format!("o{i}.txt"),
                        text.as_bytes(),
                        &limits,
                    );
                }
            });
        }
    });
    started.elapsed().as_secs_f64()
}

pub async fn run(args: DiscoveryBenchArgs) -> anyhow::Result<()> {
    if args.objects == 0 || args.kib == 0 || args.rounds == 0 {
        bail!("--objects, --kib and --rounds must be at least 1");
    }
    let (_server, endpoint, dir) = start_own_server(&["--anomaly-interval", "0"])?;
    let t = target(&endpoint, &dir, "us-east-1")?;
    put(&t, "/bench", Bytes::new()).await?;
    let texts: Vec<String> = (0..args.objects)
        .map(|i| crate::bench_scan::corpus(i as u64 + 1, args.kib * 1024))
        .collect();
    let total: usize = texts.iter().map(String::len).sum();
    if !args.json {
        eprintln!(
            "writing {} objects of {} KiB ({:.1} MB) …",
            args.objects,
            args.kib,
            total as f64 / 1e6
        );
    }
    for (i, text) in texts.iter().enumerate() {
        put(&t, &format!("/bench/o{i}.txt"), Bytes::from(text.clone())).await?;
    }
    let account = macie(&t, "GET", "/macie", None).await?["serviceRole"]
        .as_str()
        .and_then(|r| r.split(':').nth(4))
        .unwrap_or("111122223333")
        .to_owned();
    let (mut job_secs, mut local_secs) = (Vec::new(), Vec::new());
    let mut last = Value::Null;
    for round in 0..args.rounds {
        let (secs, job) = job_round(&t, &account, round).await?;
        job_secs.push(secs);
        last = job;
        local_secs.push(local_round(&texts));
        if !args.json {
            eprintln!(
                "round {}: job {:.2} s, local scan {:.2} s",
                round + 1,
                job_secs[round],
                local_secs[round]
            );
        }
    }
    let (job, local) = (median(job_secs), median(local_secs));
    let mb = total as f64 / 1e6;
    let result = json!({
        "objects": args.objects,
        "object_kib": args.kib,
        "megabytes": mb,
        "threads": std::thread::available_parallelism().map_or(2, |n| n.get()),
        "job_seconds": job,
        "job_mb_s": mb / job,
        "job_objects_s": args.objects as f64 / job,
        "local_mb_s": mb / local,
        "ratio": local / job,
        "last_run": last["cofferLastRun"],
    });
    if args.json {
        println!("{result}");
        return Ok(());
    }
    println!(
        "classification job: {:.1} MB/s, {:.0} objects/s ({} objects of {} KiB, median of {})",
        mb / job,
        args.objects as f64 / job,
        args.objects,
        args.kib,
        args.rounds
    );
    println!("scan alone, in process, every core: {:.1} MB/s", mb / local);
    println!("ratio: {:.2}", local / job);
    Ok(())
}
