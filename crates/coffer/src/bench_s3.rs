//! `coffer bench s3`: PUT and GET throughput of objects of several sizes through the real S3 API
//! (keep-alive HTTPS, SigV4-signed requests with unsigned payloads, as SDKs send over TLS) on two
//! Coffers started here — one as shipped, one whose package cipher is swapped for a copy — in
//! alternating rounds, so the ratio is what sealing costs on this machine now. With
//! `--large-gib N`, one object of N GiB is streamed up and back down and the server's peak
//! resident memory is read from /proc.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;

use crate::bench::{OwnServer, start_own_server};
use crate::client::{Target, connect_as, s3_headers, target};

pub(crate) const MIB: f64 = 1024.0 * 1024.0;

#[derive(Debug, Args)]
pub struct S3BenchArgs {
    /// Object sizes to measure, e.g. 4k,1m,64m.
    #[arg(long, value_delimiter = ',', default_values_t = vec!["4k".to_owned(), "1m".to_owned(), "64m".to_owned()])]
    sizes: Vec<String>,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// Rounds; each measures both servers once (alternating which goes first).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Stream one object of this many GiB up and down (sealed server only) and report the
    /// server's peak memory. 0 skips it.
    #[arg(long, default_value_t = 0)]
    large_gib: u64,
    /// Skip the size sweep (with --large-gib: only the large object).
    #[arg(long)]
    no_sweep: bool,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub(crate) fn parse_size(s: &str) -> anyhow::Result<usize> {
    let s = s.trim().to_ascii_lowercase();
    let (n, scale) = match s.chars().last() {
        Some('k') => (&s[..s.len() - 1], 1024),
        Some('m') => (&s[..s.len() - 1], 1024 * 1024),
        Some('g') => (&s[..s.len() - 1], 1024 * 1024 * 1024),
        _ => (s.as_str(), 1),
    };
    let n: usize = n
        .parse()
        .with_context(|| format!("'{s}' is not a size; write 4k, 1m or 64m"))?;
    Ok(n * scale)
}

type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

fn full(b: Bytes) -> Body {
    Full::new(b).map_err(|never| match never {}).boxed()
}

struct Side {
    label: &'static str,
    server: OwnServer,
    target: Arc<Target>,
}

/// A server's S3 endpoint with the bucket `bench` made on it.
pub(crate) struct BucketSide {
    pub(crate) target: Arc<Target>,
}

async fn side(label: &'static str, extra: &[&str]) -> anyhow::Result<Side> {
    let (server, endpoint, dir) = start_own_server(extra)?;
    let b = side_on(label, &endpoint, &dir).await?;
    Ok(Side {
        label,
        server,
        target: b.target,
    })
}

/// Makes the bucket `bench` on a running server.
pub(crate) async fn side_on(
    label: &str,
    endpoint: &str,
    dir: &std::path::Path,
) -> anyhow::Result<BucketSide> {
    let target = Arc::new(target(endpoint, dir, "us-east-1")?);
    let mut c = connect_as::<Body>(&target).await?;
    let mut req = hyper::Request::put("/bench").body(full(Bytes::new()))?;
    *req.headers_mut() = s3_headers(&target, "PUT", "/bench", None)?;
    let r = c.send_request(req).await?;
    if !r.status().is_success() {
        bail!(
            "CreateBucket on the {label} server failed: HTTP {}",
            r.status()
        );
    }
    Ok(BucketSide { target })
}

/// Bytes moved per second by `clients` connections doing PUTs (or GETs) of `body` for
/// `duration`, after a short warm-up.
pub(crate) async fn measure(
    t: &Arc<Target>,
    size: usize,
    body: &Bytes,
    put: bool,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<(f64, u64)> {
    let warmup = Duration::from_millis(500);
    let start = Instant::now() + warmup;
    let end = start + duration;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let t = t.clone();
        let body = body.clone();
        let mut sender = connect_as::<Body>(&t).await?;
        tasks.push(tokio::spawn(async move {
            let (mut bytes, mut errors, mut i) = (0u64, 0u64, 0usize);
            while Instant::now() < end {
                // Few keys per client: PUTs overwrite, GETs read what the PUTs left.
                let path = format!("/bench/{size}-{c}-{}", i % 4);
                i += 1;
                let method = if put { "PUT" } else { "GET" };
                let req = hyper::Request::builder()
                    .method(method)
                    .uri(&path)
                    .body(if put {
                        full(body.clone())
                    } else {
                        full(Bytes::new())
                    });
                let Ok(mut req) = req else { break };
                let Ok(h) = s3_headers(&t, method, &path, None) else {
                    break;
                };
                *req.headers_mut() = h;
                if put {
                    req.headers_mut()
                        .insert("content-length", http::HeaderValue::from(body.len()));
                }
                let counted = Instant::now() >= start;
                let ok = async {
                    sender.ready().await.ok()?;
                    let resp = sender.send_request(req).await.ok()?;
                    let status = resp.status();
                    let got = resp.into_body().collect().await.ok()?.to_bytes().len();
                    status
                        .is_success()
                        .then_some(if put { body.len() } else { got })
                }
                .await;
                match ok {
                    Some(n) if counted => bytes += n as u64,
                    Some(_) => {}
                    None => {
                        errors += 1;
                        match connect_as::<Body>(&t).await {
                            Ok(s) => sender = s,
                            Err(_) => break,
                        }
                    }
                }
            }
            (bytes, errors)
        }));
    }
    let (mut bytes, mut errors) = (0, 0);
    for t in tasks {
        let (b, e) = t.await?;
        bytes += b;
        errors += e;
    }
    Ok((bytes as f64 / duration.as_secs_f64(), errors))
}

/// Writes every key the GETs of `clients` connections will read.
pub(crate) async fn populate(
    t: &Arc<Target>,
    size: usize,
    body: &Bytes,
    clients: usize,
) -> anyhow::Result<()> {
    let mut sender = connect_as::<Body>(t).await?;
    for c in 0..clients {
        for i in 0..4 {
            let path = format!("/bench/{size}-{c}-{i}");
            let mut req = hyper::Request::put(&path).body(full(body.clone()))?;
            *req.headers_mut() = s3_headers(t, "PUT", &path, None)?;
            req.headers_mut()
                .insert("content-length", http::HeaderValue::from(body.len()));
            sender.ready().await?;
            let resp = sender.send_request(req).await?;
            let status = resp.status();
            let _ = resp.into_body().collect().await;
            if !status.is_success() {
                bail!("writing {path} failed: HTTP {status}");
            }
        }
    }
    Ok(())
}

#[derive(Debug, serde::Serialize)]
struct Row {
    size: String,
    operation: &'static str,
    sealed_mib_s: f64,
    baseline_mib_s: f64,
    ratio: f64,
    ratio_range: (f64, f64),
    errors: u64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

async fn sweep(args: &S3BenchArgs) -> anyhow::Result<Vec<Row>> {
    let sealed = side("sealed", &[]).await?;
    let baseline = side(
        "baseline (copy, not encrypted)",
        &["--insecure-bench-baseline"],
    )
    .await?;
    let duration = Duration::from_secs_f64(args.duration);
    let mut rows = Vec::new();
    for size_text in &args.sizes {
        let size = parse_size(size_text)?;
        let mut body = vec![0u8; size];
        coffer_crypto::fill_random(&mut body).context("random body")?;
        let body = Bytes::from(body);
        for put in [true, false] {
            let op = if put { "PUT" } else { "GET" };
            let (mut s_rates, mut b_rates, mut ratios, mut errors) =
                (Vec::new(), Vec::new(), Vec::new(), 0);
            // Large objects: fewer connections (at most 256 MiB in flight) and long enough for
            // each to finish several requests, so that whole requests do not quantise the rate.
            let clients = args.clients.min((256 * 1024 * 1024 / size).max(1));
            let duration = duration.max(Duration::from_secs_f64(
                size as f64 * clients as f64 * 8.0 / (400.0 * MIB),
            ));
            if !put {
                // Every key the GETs read, written once on each side.
                for s in [&sealed, &baseline] {
                    populate(&s.target, size, &body, clients).await?;
                }
            }
            for round in 0..args.rounds {
                let order = if round % 2 == 0 {
                    [&sealed, &baseline]
                } else {
                    [&baseline, &sealed]
                };
                let mut rates = [0.0; 2];
                for s in order {
                    if !args.json {
                        eprintln!("  {size_text} {op} round {}: {} ...", round + 1, s.label);
                    }
                    let (rate, e) = measure(&s.target, size, &body, put, clients, duration).await?;
                    errors += e;
                    rates[usize::from(s.label != "sealed")] = rate;
                }
                s_rates.push(rates[0] / MIB);
                b_rates.push(rates[1] / MIB);
                ratios.push(if rates[1] > 0.0 {
                    rates[0] / rates[1]
                } else {
                    0.0
                });
            }
            let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = ratios.iter().copied().fold(0.0, f64::max);
            rows.push(Row {
                size: size_text.clone(),
                operation: op,
                sealed_mib_s: median(s_rates),
                baseline_mib_s: median(b_rates),
                ratio: median(ratios),
                ratio_range: (lo, hi),
                errors,
            });
        }
    }
    drop(baseline);
    drop(sealed);
    Ok(rows)
}

#[derive(Debug, serde::Serialize)]
struct Large {
    gib: u64,
    put_mib_s: f64,
    get_mib_s: f64,
    idle_peak_rss_mib: f64,
    peak_rss_mib: f64,
}

/// Sends one signed request and returns its status, headers and body.
async fn send(
    t: &Target,
    sender: &mut hyper::client::conn::http1::SendRequest<Body>,
    method: &str,
    path: &str,
    query: Option<&str>,
    body: Body,
    len: u64,
) -> anyhow::Result<(http::StatusCode, http::HeaderMap, Bytes)> {
    let uri = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(uri)
        .body(body)?;
    *req.headers_mut() = s3_headers(t, method, path, query)?;
    req.headers_mut()
        .insert("content-length", http::HeaderValue::from(len));
    sender.ready().await?;
    let resp = sender.send_request(req).await?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok((parts.status, parts.headers, body))
}

/// A body of `len` bytes made as it is sent, one 1 MiB chunk at a time.
fn generated(len: u64) -> Body {
    let chunk = Bytes::from(vec![0x5a_u8; 1024 * 1024]);
    let n = len.div_ceil(chunk.len() as u64);
    let stream = futures_util::stream::iter((0..n).map(move |i| {
        let left = len - i * chunk.len() as u64;
        Ok::<_, std::io::Error>(Frame::data(chunk.slice(..(left as usize).min(chunk.len()))))
    }));
    BodyExt::boxed(StreamBody::new(stream))
}

/// Streams `gib` GiB up as a multipart upload of 1 GiB parts (a single PUT stops at 5 GiB, as in
/// S3) and back down as one GET, holding it in memory in neither process.
async fn large(gib: u64, json: bool) -> anyhow::Result<Large> {
    const PART: u64 = 1024 * 1024 * 1024;
    let s = side("sealed", &[]).await?;
    let idle = s.server.peak_rss().unwrap_or(0);
    let total = gib * PART;
    let t = &s.target;
    let mut sender = connect_as::<Body>(t).await?;
    let path = "/bench/large";
    let (status, _, body) = send(
        t,
        &mut sender,
        "POST",
        path,
        Some("uploads="),
        full(Bytes::new()),
        0,
    )
    .await?;
    let text = String::from_utf8_lossy(&body);
    let upload_id = text
        .split_once("<UploadId>")
        .and_then(|(_, r)| r.split_once("</UploadId>"))
        .map(|(id, _)| id.to_owned())
        .with_context(|| format!("CreateMultipartUpload failed: HTTP {status}: {text}"))?;
    let started = Instant::now();
    let mut complete = String::from("<CompleteMultipartUpload>");
    for n in 1..=gib {
        if !json {
            eprintln!("  PUT part {n} of {gib} (1 GiB) ...");
        }
        let q = format!("partNumber={n}&uploadId={upload_id}");
        let (status, headers, _) =
            send(t, &mut sender, "PUT", path, Some(&q), generated(PART), PART).await?;
        let etag = headers
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .with_context(|| format!("UploadPart {n} failed: HTTP {status}"))?;
        complete.push_str(&format!(
            "<Part><PartNumber>{n}</PartNumber><ETag>{etag}</ETag></Part>"
        ));
    }
    complete.push_str("</CompleteMultipartUpload>");
    let q = format!("uploadId={upload_id}");
    let len = complete.len() as u64;
    let (status, _, body) = send(
        t,
        &mut sender,
        "POST",
        path,
        Some(&q),
        full(Bytes::from(complete)),
        len,
    )
    .await?;
    if !status.is_success() {
        bail!(
            "CompleteMultipartUpload failed: HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let put_secs = started.elapsed().as_secs_f64();
    if !json {
        eprintln!("  GET {gib} GiB ...");
    }
    let mut req = hyper::Request::get(path).body(full(Bytes::new()))?;
    *req.headers_mut() = s3_headers(t, "GET", path, None)?;
    let started = Instant::now();
    sender.ready().await?;
    let resp = sender.send_request(req).await.context("large GET")?;
    if !resp.status().is_success() {
        bail!("the large GET failed: HTTP {}", resp.status());
    }
    let mut body = resp.into_body();
    let mut got = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(d) = frame?.into_data() {
            got += d.len() as u64;
        }
    }
    let get_secs = started.elapsed().as_secs_f64();
    if got != total {
        bail!("the large GET returned {got} bytes, not {total}");
    }
    let peak = s.server.peak_rss().unwrap_or(0);
    Ok(Large {
        gib,
        put_mib_s: total as f64 / MIB / put_secs,
        get_mib_s: total as f64 / MIB / get_secs,
        idle_peak_rss_mib: idle as f64 / MIB,
        peak_rss_mib: peak as f64 / MIB,
    })
}

pub async fn run(args: S3BenchArgs) -> anyhow::Result<()> {
    let rows = if args.no_sweep {
        Vec::new()
    } else {
        sweep(&args).await?
    };
    let big = if args.large_gib > 0 {
        Some(large(args.large_gib, args.json).await?)
    } else {
        None
    };
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "objects": rows, "large_object": big })
        );
        return Ok(());
    }
    if !rows.is_empty() {
        println!(
            "{:<6} {:<4} {:>14} {:>16} {:>7} {:>15} {:>7}",
            "size", "op", "sealed MiB/s", "baseline MiB/s", "ratio", "ratio range", "errors"
        );
        for r in &rows {
            println!(
                "{:<6} {:<4} {:>14.1} {:>16.1} {:>7.2} {:>7.2}–{:<7.2} {:>7}",
                r.size,
                r.operation,
                r.sealed_mib_s,
                r.baseline_mib_s,
                r.ratio,
                r.ratio_range.0,
                r.ratio_range.1,
                r.errors
            );
        }
        println!(
            "(baseline: the same server with the package cipher swapped for a copy; target ratio ≥ 0.90 from 1 MiB up)"
        );
    }
    if let Some(b) = big {
        println!(
            "large object: {} GiB PUT {:.1} MiB/s, GET {:.1} MiB/s; server peak RSS {:.1} MiB (idle {:.1} MiB; target < 200 MiB)",
            b.gib, b.put_mib_s, b.get_mib_s, b.peak_rss_mib, b.idle_peak_rss_mib
        );
    }
    Ok(())
}
