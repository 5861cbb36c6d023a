//! Scans a text file in 1 MiB pieces (as a reader hands a file over) with every managed
//! identifier and prints the best of a few rounds, and with `--per-identifier` how many values
//! each identifier found. For profiling the scanner alone, e.g. its instruction count, which a
//! shared machine does not disturb:
//!
//! ```sh
//! coffer bench scan --mib 8 --write-corpus /tmp/corpus.txt
//! cargo build --release -p coffer-scan --features vectorscan --example scan_corpus
//! valgrind --tool=callgrind --toggle-collect='coffer_scan::engine::Scanner::scan' \
//!     target/release/examples/scan_corpus /tmp/corpus.txt --rounds 1
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use coffer_scan::Scanner;

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .expect("usage: scan_corpus FILE [--rounds N] [--per-identifier]");
    let mut rounds = 5;
    let mut per_identifier = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => rounds = args.next().and_then(|n| n.parse().ok()).expect("a number"),
            "--per-identifier" => per_identifier = true,
            other => panic!("unknown argument {other}"),
        }
    }
    let text = std::fs::read_to_string(&path).expect("a UTF-8 text file");
    let mut pieces = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let end = text.ceil_char_boundary((start + (1 << 20)).min(text.len()));
        pieces.push(&text[start..end]);
        start = end;
    }
    let scanner = Scanner::managed();
    println!(
        "{} ({} bytes, {} pieces)",
        scanner.engine(),
        text.len(),
        pieces.len()
    );
    let mut best = 0f64;
    let mut counts = vec![0usize; scanner.rules().len()];
    for _ in 0..rounds.max(1) {
        counts.iter_mut().for_each(|c| *c = 0);
        let t = Instant::now();
        for p in &pieces {
            for h in scanner.scan(p, None) {
                counts[h.rule] += 1;
            }
        }
        best = best.max(text.len() as f64 / t.elapsed().as_secs_f64() / 1e6);
    }
    println!(
        "{} values, best round {best:.1} MB/s",
        counts.iter().sum::<usize>()
    );
    if per_identifier {
        let mut by_id: Vec<(&str, usize)> = Vec::new();
        for (i, &n) in counts.iter().enumerate() {
            let id = scanner.rule(i).id.as_str();
            match by_id.iter_mut().find(|(x, _)| *x == id) {
                Some(e) => e.1 += n,
                None => by_id.push((id, n)),
            }
        }
        by_id.retain(|e| e.1 > 0);
        by_id.sort_by_key(|e| std::cmp::Reverse(e.1));
        for (id, n) in by_id {
            println!("{n:>10}  {id}");
        }
    }
}
