//! `coffer bench scan`: the sensitive-data scanner's throughput on one core, over generated mixed
//! text (prose, logs, CSV, JSON, config files, source code, with values planted at a realistic
//! density), beside a single-literal search (memchr's memmem) over the same bytes in the same run:
//! the ceiling any scanner that reads every byte can approach.

use std::time::Instant;

use clap::Args;
use coffer_scan::{Prefilter, Scanner};
use serde_json::json;

#[derive(Debug, Args)]
pub struct ScanBenchArgs {
    /// Size of the generated corpus, in MiB.
    #[arg(long, default_value_t = 64)]
    mib: usize,
    /// Alternating rounds of baseline and scanner (the median of each is reported).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Seed of the corpus generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// Also write the generated corpus to this file (to profile or scan it).
    #[arg(long, value_name = "FILE")]
    write_corpus: Option<std::path::PathBuf>,
}

/// A small deterministic generator (the anomaly simulation's SplitMix64), enough to vary a
/// corpus.
pub(crate) struct Rng(coffer_scan::anomaly::sim::Rng);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(coffer_scan::anomaly::sim::Rng::new(seed))
    }
    pub(crate) fn below(&mut self, n: usize) -> usize {
        self.0.below(n as u64) as usize
    }
    pub(crate) fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
    fn hex(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b"0123456789abcdef"[self.below(16)]))
            .collect()
    }
}

const WORDS: &[&str] = &[
    "the",
    "quarterly",
    "report",
    "shows",
    "that",
    "revenue",
    "grew",
    "in",
    "every",
    "region",
    "while",
    "costs",
    "stayed",
    "flat",
    "our",
    "team",
    "will",
    "review",
    "contract",
    "terms",
    "before",
    "signing",
    "please",
    "send",
    "updated",
    "figures",
    "by",
    "friday",
    "customer",
    "support",
    "escalated",
    "ticket",
    "about",
    "delayed",
    "shipment",
    "warehouse",
    "inventory",
    "meeting",
    "notes",
    "action",
    "items",
    "owner",
    "deadline",
    "budget",
    "approved",
    "for",
    "next",
    "year",
    "with",
    "a",
    "small",
    "increase",
    "marketing",
    "campaign",
    "launch",
    "plan",
];

/// Values planted in the corpus (all valid, so the scanner confirms them).
const PLANTED: &[&str] = &[
    "card 4111 1111 1111 1111",
    "SSN 123-45-6789",
    "IBAN DE89370400440532013000",
    "contact jane.doe@example.com",
    "aws_secret_access_key = 9drTJvcXLB89EXhRXqhlc4oZxXFsF2yTzDOhGWWF",
    "phone: (415) 555-0132",
    "token ghp_Zk9mQ2xvV3RyYjZ1c0hOa1pYa3ZhRk3x9b1Q",
    "DOB: 1984-07-23",
];

fn prose(r: &mut Rng, out: &mut String) {
    for _ in 0..(40 + r.below(80)) {
        out.push_str(r.pick(WORDS));
        out.push(if r.below(12) == 0 { '.' } else { ' ' });
    }
    out.push('\n');
}

fn log_line(r: &mut Rng, out: &mut String) {
    out.push_str(&format!(
        "2026-11-{:02}T{:02}:{:02}:{:02}.{:03}Z INFO req={} ip=10.{}.{}.{} path=/api/v1/orders/{} status={} dur_ms={} trace={}\n",
        1 + r.below(28),
        r.below(24),
        r.below(60),
        r.below(60),
        r.below(1000),
        r.hex(16),
        r.below(256),
        r.below(256),
        r.below(256),
        r.below(1_000_000),
        [200, 201, 404, 500][r.below(4)],
        r.below(2000),
        r.hex(32)
    ));
}

fn csv_rows(r: &mut Rng, out: &mut String) {
    out.push_str("id,name,city,amount,created\n");
    for _ in 0..(5 + r.below(20)) {
        out.push_str(&format!(
            "{},{} {},{},{}.{:02},2026-{:02}-{:02}\n",
            r.below(100_000),
            r.pick(&["Ana", "Bo", "Chen", "Dana", "Eli"]),
            r.pick(&["Smith", "Ng", "Ortiz", "Kowalski"]),
            r.pick(&["Berlin", "Austin", "Lyon", "Pune"]),
            r.below(10_000),
            r.below(100),
            1 + r.below(12),
            1 + r.below(28)
        ));
    }
}

fn json_record(r: &mut Rng, out: &mut String) {
    out.push_str(&format!(
        "{{\"id\":\"{}-{}-4{}-a{}-{}\",\"sku\":\"SKU{}\",\"qty\":{},\"price\":{}.{:02},\"sha256\":\"{}\",\"tags\":[\"{}\",\"{}\"]}}\n",
        r.hex(8),
        r.hex(4),
        r.hex(3),
        r.hex(3),
        r.hex(12),
        r.below(99_999),
        r.below(50),
        r.below(500),
        r.below(100),
        r.hex(64),
        r.pick(WORDS),
        r.pick(WORDS)
    ));
}

fn config(r: &mut Rng, out: &mut String) {
    out.push_str(&format!(
        "[server]\nhost = \"0.0.0.0\"\nport = {}\nworkers = {}\ntimeout = \"30s\"\nlog_level = \"info\"\nversion = \"1.{}.{}\"\n\n",
        8000 + r.below(1000),
        1 + r.below(16),
        r.below(20),
        r.below(100)
    ));
}

fn code(r: &mut Rng, out: &mut String) {
    out.push_str(&format!(
        "fn handle_{}(req: &Request) -> Result<Response, Error> {{\n    let id = req.param(\"id\")?;\n    let row = db.query(\"SELECT * FROM orders WHERE id = $1\", &[&id])?;\n    Ok(Response::json(&row))\n}}\n\n",
        r.pick(WORDS)
    ));
}

/// Mixed text of about `bytes` bytes, with a planted value every ~2 KiB on average.
pub(crate) fn corpus(seed: u64, bytes: usize) -> String {
    let mut r = Rng::new(seed);
    let mut out = String::with_capacity(bytes + 4096);
    while out.len() < bytes {
        match r.below(6) {
            0 => prose(&mut r, &mut out),
            1 => {
                for _ in 0..10 {
                    log_line(&mut r, &mut out);
                }
            }
            2 => csv_rows(&mut r, &mut out),
            3 => {
                for _ in 0..5 {
                    json_record(&mut r, &mut out);
                }
            }
            4 => config(&mut r, &mut out),
            _ => code(&mut r, &mut out),
        }
        if r.below(2) == 0 {
            out.push_str(r.pick(PLANTED));
            out.push('\n');
        }
    }
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn run(args: ScanBenchArgs) -> anyhow::Result<()> {
    let text = corpus(args.seed, args.mib << 20);
    if let Some(path) = &args.write_corpus {
        std::fs::write(path, &text)?;
    }
    let scanner = Scanner::managed();
    // With Vectorscan built in, the pure-Rust engine is measured in the same run too.
    let rust = scanner
        .engine()
        .starts_with("Vectorscan")
        .then(|| Scanner::builder().prefilter(Prefilter::Rust).build())
        .transpose()?;
    let chunks: Vec<&str> = split_lines(&text, 1 << 20);
    let mb = text.len() as f64 / 1e6;
    let needle = memchr::memmem::Finder::new("zq-not-in-the-corpus-qz");
    let (mut base, mut scan, mut scan_rust) = (Vec::new(), Vec::new(), Vec::new());
    let mut hits = 0;
    let mut found = 0;
    let run_scan = |s: &Scanner| {
        let t = Instant::now();
        let hits = chunks.iter().map(|c| s.scan(c, None).len()).sum::<usize>();
        (hits, mb / t.elapsed().as_secs_f64())
    };
    for _ in 0..args.rounds.max(1) {
        let t = Instant::now();
        found = chunks
            .iter()
            .filter(|c| needle.find(c.as_bytes()).is_some())
            .count();
        base.push(mb / t.elapsed().as_secs_f64());
        let (n, speed) = run_scan(&scanner);
        hits = n;
        scan.push(speed);
        if let Some(rust) = &rust {
            let (n, speed) = run_scan(rust);
            anyhow::ensure!(
                n == hits,
                "the engines disagree: {hits} values with {}, {n} with the pure-Rust one",
                scanner.engine()
            );
            scan_rust.push(speed);
        }
    }
    // Untimed: the reference path (every digit run tried, every value confirmed by its regex)
    // finds exactly the same values where they are, or the figures above mean nothing.
    let reference = Scanner::builder()
        .prefilter(Prefilter::Rust)
        .reference(true)
        .build()?;
    for (i, c) in chunks.iter().enumerate() {
        anyhow::ensure!(
            scanner.scan(c, None) == reference.scan(c, None),
            "the fast path and the reference path disagree in MiB {i} of the corpus"
        );
    }
    // The median says what a round usually gets; the best round, what the code does when the
    // machine's neighbours leave the core alone (on a shared VM the two differ by a third).
    let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let (scan_best, rust_best) = (best(&scan), best(&scan_rust));
    let (base, scan) = (median(base), median(scan));
    let scan_rust = (!scan_rust.is_empty()).then(|| median(scan_rust));
    let identifiers = {
        let mut ids: Vec<&str> = scanner.rules().iter().map(|r| r.id.as_str()).collect();
        ids.dedup();
        ids.len()
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "corpus_bytes": text.len(),
                "identifiers": identifiers,
                "values_found": hits,
                "engine": scanner.engine(),
                "literal_search_mb_per_s": base,
                "scan_mb_per_s": scan,
                "scan_mb_per_s_best_round": scan_best,
                "ratio": scan / base,
                "pure_rust_scan_mb_per_s": scan_rust,
                "pure_rust_scan_mb_per_s_best_round": scan_rust.map(|_| rust_best),
                "literal_matches": found,
            }))?
        );
    } else {
        println!(
            "corpus {:.1} MB of mixed text, {identifiers} identifiers, {hits} values found",
            mb
        );
        println!("single-literal search (memmem, the ceiling): {base:>8.1} MB/s");
        println!(
            "coffer-scan, one core:                       {scan:>8.1} MB/s   (best round {scan_best:.1}; {})",
            scanner.engine()
        );
        if let Some(r) = scan_rust {
            println!(
                "coffer-scan, one core, pure-Rust engine:     {r:>8.1} MB/s   (best round {rust_best:.1})"
            );
        }
        println!(
            "ratio scan / literal search:                 {:>8.3}",
            scan / base
        );
    }
    Ok(())
}

/// Splits text into pieces of about `size` bytes at line ends (as a reader hands a file over).
fn split_lines(text: &str, size: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let mut end = (start + size).min(text.len());
        while end < text.len() && text.as_bytes()[end - 1] != b'\n' {
            end += 1;
        }
        out.push(&text[start..end]);
        start = end;
    }
    out
}
