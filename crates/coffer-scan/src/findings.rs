//! Findings: what one identifier found in one file or object, how often, and where (up to 15
//! places, as Macie keeps), with a redacted sample. Never the value.

use serde::Serialize;

use crate::{Category, Severity};

/// Places kept per finding (Macie keeps 15).
pub const MAX_LOCATIONS: usize = 15;

/// Where in a file a value is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Place {
    /// Text: 1-based line and column (in characters), and the byte range in the (decoded) text.
    Text {
        line: usize,
        column: usize,
        start: usize,
        end: usize,
    },
    /// A CSV/TSV cell: 1-based row (the header is row 1) and column, and the column's name.
    Cell {
        row: usize,
        column: usize,
        #[serde(rename = "columnName")]
        column_name: String,
    },
    /// A JSON value: 0-based record (a line of JSON Lines; 0 for a JSON document) and its path.
    Record {
        record: usize,
        #[serde(rename = "jsonPath")]
        json_path: String,
    },
}

/// A place, and the member of an archive it is in (`inner.zip/data/people.csv`), if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    #[serde(flatten)]
    pub place: Place,
}

/// What one identifier found in one file.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub identifier: String,
    pub category: Category,
    pub severity: Severity,
    pub count: u64,
    pub locations: Vec<Location>,
    /// The first value found, redacted.
    pub sample: String,
}

/// Gathers a file's hits into one finding per identifier.
#[derive(Debug, Default)]
pub struct Collector {
    pub findings: Vec<Finding>,
}

impl Collector {
    pub fn add(
        &mut self,
        identifier: &str,
        category: Category,
        severity: Severity,
        location: impl FnOnce() -> Location,
        value: &str,
    ) {
        match self
            .findings
            .iter_mut()
            .find(|f| f.identifier == identifier)
        {
            Some(f) => {
                f.count += 1;
                if f.locations.len() < MAX_LOCATIONS {
                    f.locations.push(location());
                }
            }
            None => self.findings.push(Finding {
                identifier: identifier.to_owned(),
                category,
                severity,
                count: 1,
                locations: vec![location()],
                sample: crate::redact(value),
            }),
        }
    }
}

/// Byte offsets to 1-based lines and columns, for one text.
#[derive(Debug)]
pub struct Lines<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> Lines<'a> {
    pub fn new(text: &'a str) -> Self {
        let starts = std::iter::once(0)
            .chain(memchr::memchr_iter(b'\n', text.as_bytes()).map(|i| i + 1))
            .collect();
        Lines { text, starts }
    }

    pub fn place(&self, start: usize, end: usize) -> Place {
        let line = self.starts.partition_point(|&s| s <= start);
        let line_start = self.starts[line - 1];
        let column = self
            .text
            .get(line_start..start)
            .map_or(start - line_start, |s| s.chars().count())
            + 1;
        Place::Text {
            line,
            column,
            start,
            end,
        }
    }
}
