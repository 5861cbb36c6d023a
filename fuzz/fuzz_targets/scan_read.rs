//! Any bytes through every reader (the first byte picks the name the format is guessed from:
//! text, CSV, TSV, JSON, JSON Lines, gzip, zip, tar or an office document): no reader panics, every
//! location is well formed, and decompression stays within the limits.
#![no_main]

use std::sync::OnceLock;

use coffer_scan::{Limits, Place, Scanner};
use libfuzzer_sys::fuzz_target;

fn scanner() -> &'static Scanner {
    static S: OnceLock<Scanner> = OnceLock::new();
    S.get_or_init(Scanner::managed)
}

const NAMES: [&str; 9] = [
    "a.txt", "a.csv", "a.tsv", "a.json", "a.jsonl", "a.gz", "a.zip", "a.docx", "a.tar",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let limits = Limits {
        max_expanded: 16 << 20,
        ..Limits::default()
    };
    let name = NAMES[usize::from(pick) % NAMES.len()];
    // The streaming reader never panics either, and on text finds what the whole-file one finds.
    let mut consumed = 0u64;
    let streamed =
        coffer_scan::read::scan_stream(scanner(), name, rest, &limits, &mut |n| consumed += n);
    if let Ok(s) = &streamed {
        assert!(consumed <= rest.len() as u64 && s.bytes_scanned <= rest.len() as u64 * 4);
    }
    if let Ok(report) = coffer_scan::read::scan_bytes(scanner(), name, rest, &limits) {
        if name == "a.txt"
            && let Ok(s) = &streamed
        {
            assert_eq!(s.findings.len(), report.findings.len());
        }
        assert!(report.bytes_scanned <= limits.max_expanded + rest.len() as u64 * 4);
        for f in &report.findings {
            assert!(f.count >= f.locations.len() as u64 && !f.locations.is_empty());
            for l in &f.locations {
                match &l.place {
                    Place::Text {
                        line,
                        column,
                        start,
                        end,
                    } => {
                        assert!(*line >= 1 && *column >= 1 && start < end);
                    }
                    Place::Cell { row, column, .. } => assert!(*row >= 1 && *column >= 1),
                    Place::Record { json_path, .. } => assert!(json_path.starts_with('$')),
                }
            }
        }
    }
});
