//! The literal prefilter on Vectorscan/Hyperscan (the `vectorscan` feature): every identifier's
//! trigger literals and keywords in one database, matched in one pass (ignoring case unless a
//! literal is cased). It reports every occurrence of every literal (overlapping and nested ones
//! too) by its end; a literal's start is its end less its length. A literal that must begin a
//! word carries the byte class before it into its pattern, so that its occurrences inside words
//! (`tin` in `setting`) are dropped inside the library instead of costing a callback each.

use std::sync::Mutex;

use hyperscan::prelude::*;

use crate::engine::Literal;

pub(crate) struct Literals {
    db: BlockDatabase,
    /// Scratch spaces, one per scan running at once (Vectorscan's scratch is not shared).
    scratch: Mutex<Vec<Scratch>>,
    lens: Vec<usize>,
}

impl std::fmt::Debug for Literals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Literals")
            .field("patterns", &self.lens.len())
            .finish()
    }
}

/// The library's name and version, as it reports them.
pub(crate) fn version() -> String {
    format!(
        "Vectorscan/Hyperscan {}",
        hyperscan::version_str().to_string_lossy()
    )
}

impl Literals {
    /// Compiles the literals. Fails where the library cannot run (a CPU without SSSE3) or cannot
    /// compile them.
    pub(crate) fn new(literals: &[Literal]) -> Result<Literals, String> {
        if literals.is_empty() {
            return Err("no literals".into());
        }
        let patterns: Vec<Pattern> = literals
            .iter()
            .enumerate()
            .map(|(i, l)| {
                // Every byte escaped: the literal means itself, whatever it holds.
                let mut expression = String::new();
                if l.word_start {
                    expression.push_str("(?:^|[^A-Za-z0-9])");
                }
                for b in l.text.bytes() {
                    expression.push_str(&format!("\\x{b:02x}"));
                }
                Pattern {
                    expression,
                    flags: if l.cased {
                        CompileFlags::empty()
                    } else {
                        CompileFlags::CASELESS
                    },
                    id: Some(i),
                    ext: Default::default(),
                    som: None,
                }
            })
            .collect();
        let db: BlockDatabase = Patterns::from(patterns)
            .build()
            .map_err(|e| format!("cannot compile the literal database: {e}"))?;
        let first = db
            .alloc_scratch()
            .map_err(|e| format!("cannot allocate scratch space: {e}"))?;
        Ok(Literals {
            db,
            scratch: Mutex::new(vec![first]),
            lens: literals.iter().map(|l| l.text.len()).collect(),
        })
    }

    /// Calls `each(literal, start, end)` for every occurrence, in order of end.
    pub(crate) fn scan(
        &self,
        text: &[u8],
        mut each: impl FnMut(usize, usize, usize),
    ) -> Result<(), String> {
        if u32::try_from(text.len()).is_err() {
            return Err("text longer than 4 GiB".into());
        }
        let scratch = self.take_scratch()?;
        let result = self.db.scan(text, &scratch, |id, _from, to, _flags| {
            let (id, end) = (id as usize, to as usize);
            each(id, end - self.lens[id], end);
            Matching::Continue
        });
        self.give_back(scratch);
        result.map_err(|e| format!("scan failed: {e}"))
    }

    fn take_scratch(&self) -> Result<Scratch, String> {
        let spare = self.scratch.lock().ok().and_then(|mut s| s.pop());
        match spare {
            Some(s) => Ok(s),
            None => self
                .db
                .alloc_scratch()
                .map_err(|e| format!("cannot allocate scratch space: {e}")),
        }
    }

    fn give_back(&self, scratch: Scratch) {
        if let Ok(mut s) = self.scratch.lock() {
            s.push(scratch);
        }
    }
}
