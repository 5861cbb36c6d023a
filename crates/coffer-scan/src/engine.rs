//! Matching in two stages. One pass of an Aho-Corasick automaton over every identifier's literals
//! and keywords, and one pass that finds runs of digits, give the places worth looking at; then
//! each identifier's pattern runs only in a small window around its own triggers, and its
//! validator, keywords, ignore words and the allow list decide what is a finding.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use regex_automata::Input;
use regex_automata::meta::Regex;

use crate::rules::{CustomError, CustomIdentifier, LETTER_AFTER, LETTERS_BEFORE, Rule, Trigger};

/// A value an identifier found: the rule's index and the value's byte range in the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub rule: usize,
    pub start: usize,
    pub end: usize,
}

#[derive(Debug, Clone, Copy)]
enum Role {
    Trigger {
        rule: usize,
        word: bool,
        bounded: bool,
    },
    Keyword {
        rule: usize,
    },
}

/// A literal or keyword of stage one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Literal {
    /// Lowercase unless `cased`.
    pub(crate) text: String,
    /// Found only as written, not ignoring ASCII case.
    pub(crate) cased: bool,
    /// Every role of it wants no letter or digit right before it (a keyword, or a trigger the
    /// pattern has `\b` before, beginning with a letter or digit): Vectorscan then reports only
    /// those occurrences.
    pub(crate) word_start: bool,
}

/// Values never reported, as Macie's allow lists: exact strings, or regexes the whole value must
/// match.
#[derive(Debug, Default)]
pub struct AllowList {
    exact: std::collections::HashSet<String>,
    regexes: Vec<Regex>,
}

impl AllowList {
    pub fn add_exact(&mut self, value: impl Into<String>) {
        self.exact.insert(value.into());
    }

    /// Adds a regex; a value it matches in full is not reported.
    pub fn add_regex(&mut self, pattern: &str) -> Result<(), String> {
        if pattern.is_empty() || pattern.len() > 512 {
            return Err("an allow-list regex must be 1 to 512 characters".into());
        }
        let re = Regex::new(&format!(r"\A(?:{pattern})\z"))
            .map_err(|e| format!("invalid allow-list regex: {e}"))?;
        self.regexes.push(re);
        Ok(())
    }

    /// Adds everything another list allows.
    pub fn extend(&mut self, other: AllowList) {
        self.exact.extend(other.exact);
        self.regexes.extend(other.regexes);
    }

    fn allows(&self, value: &str) -> bool {
        self.exact.contains(value) || self.regexes.iter().any(|r| r.is_match(value))
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.regexes.is_empty()
    }
}

/// Which identifiers run, and what is never reported.
#[derive(Debug, Default)]
pub struct ScannerBuilder {
    prefilter: Prefilter,
    reference: bool,
    only: Option<Vec<String>>,
    exclude: Vec<String>,
    custom: Vec<CustomIdentifier>,
    allow: AllowList,
}

/// Why a scanner could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Custom(#[from] CustomError),
    #[error("no managed identifier is called '{0}'; `coffer scan --list-identifiers` lists them")]
    UnknownIdentifier(String),
    #[error("cannot build the keyword automaton: {0}")]
    Automaton(String),
}

/// Which engine finds the literals and keywords of stage one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Prefilter {
    /// Vectorscan/Hyperscan when built with it and the CPU runs it; else Aho-Corasick.
    #[default]
    Auto,
    /// The pure-Rust Aho-Corasick automaton, always.
    Rust,
}

impl ScannerBuilder {
    /// Chooses the stage-one engine (both find the same values).
    pub fn prefilter(mut self, p: Prefilter) -> Self {
        self.prefilter = p;
        self
    }

    /// The reference path, for checking the fast one (they find the same values): every digit
    /// run and trigger byte is tried, none passed over on what its bit masks say, windows are
    /// searched whole (not cut where a byte no value holds comes), and every value is confirmed
    /// by its identifier's regex, also where the pattern is written in code too (IPv4
    /// addresses).
    pub fn reference(mut self, yes: bool) -> Self {
        self.reference = yes;
        self
    }

    /// Runs only these managed identifiers (custom ones always run).
    pub fn only(mut self, ids: Vec<String>) -> Self {
        self.only = Some(ids);
        self
    }

    pub fn exclude(mut self, ids: Vec<String>) -> Self {
        self.exclude = ids;
        self
    }

    pub fn custom(mut self, c: CustomIdentifier) -> Self {
        self.custom.push(c);
        self
    }

    pub fn allow(mut self, allow: AllowList) -> Self {
        self.allow = allow;
        self
    }

    pub fn build(self) -> Result<Scanner, BuildError> {
        let all = crate::rules::managed();
        for id in self.only.iter().flatten().chain(&self.exclude) {
            if !all.iter().any(|r| &r.id == id) {
                return Err(BuildError::UnknownIdentifier(id.clone()));
            }
        }
        let mut rules: Vec<Rule> = all
            .into_iter()
            .filter(|r| self.only.as_ref().is_none_or(|o| o.contains(&r.id)))
            .filter(|r| !self.exclude.contains(&r.id))
            .collect();
        for c in &self.custom {
            rules.push(c.compile()?);
        }
        let mut scanner = Scanner::new(rules, self.allow, self.prefilter)?;
        scanner.reference = self.reference;
        Ok(scanner)
    }
}

/// The compiled identifiers and prefilter; shared by every thread that scans.
#[derive(Debug)]
pub struct Scanner {
    rules: Vec<Rule>,
    /// Every literal and keyword, matched overlapping: every occurrence of each pattern is
    /// reported (`secret` in `social secret`, `routing` in `routing number`), as Vectorscan does.
    ac: AhoCorasick,
    /// Per pattern: what it is, and what it means.
    literals: Vec<Literal>,
    roles: Vec<Vec<Role>>,
    /// The same patterns in Vectorscan.
    #[cfg(feature = "vectorscan")]
    vectorscan: Option<crate::vectorscan::Literals>,
    /// What runs stage one, for reports.
    engine: String,
    /// Rules triggered by digit runs, and the fewest digits any of them needs.
    digit_rules: Vec<(usize, usize)>,
    min_digits: usize,
    /// Rules triggered by a single byte (`@`, `:`, `+`, `-`): found by the byte pass, not the
    /// automaton, where such frequent matches would cost a callback each.
    byte_rules: Vec<Vec<usize>>,
    /// Per byte: the distance at which every rule it starts wants the same byte again.
    partners: Vec<Option<usize>>,
    /// Those bytes (repeated to fill).
    trigger_bytes: [u8; TRIGGER_BYTES],
    /// Whether every rule a trigger byte starts is `touching` (a trigger byte with neither a word
    /// byte nor another trigger byte beside it is then passed over).
    touching_triggers: bool,
    /// Keyword-required digit rules: found only within their maximum distance after one of their
    /// keywords, which is checked for all of them at once first.
    keyword_digit_rules: Vec<(usize, usize)>,
    /// Digits a run not glued to an uppercase letter needs for some rule to try it, by the dots
    /// in it (0 to 3 or more): for rules without keywords, and for keyword-required ones.
    need_plain: [usize; 4],
    need_keyword: [usize; 4],
    /// The digit rules whose digits always follow letters, or always precede one (with the
    /// digits each needs): a run not passed over for the others is tried for these only when
    /// its letters are there.
    lettered: Vec<(usize, usize)>,
    letter_after: Vec<(usize, usize)>,
    /// Bytes (digits and separators) a run not glued to an uppercase letter needs before any
    /// identifier may find a value in it (at most 8), and before any that needs no keyword.
    free_min_bytes: usize,
    free_min_plain: usize,
    everywhere: Vec<usize>,
    allow: AllowList,
    /// The reference path (see `ScannerBuilder::reference`).
    reference: bool,
}

/// The rules a text's name (column header, JSON path) has a keyword of.
#[derive(Debug, Clone, Default)]
pub struct Context {
    rules: Vec<bool>,
}

impl Context {
    pub fn is_empty(&self) -> bool {
        !self.rules.iter().any(|&b| b)
    }
}

/// Per-thread buffers of one scan.
#[derive(Debug, Default)]
struct Scratch {
    keyword_ends: Vec<Vec<usize>>,
    /// Vectorscan's matches (pattern, start, end), collected before they are used.
    literal_hits: Vec<(usize, usize, usize)>,
    keyword_zones: KeywordZones,
    events: Events,
    next_from: Vec<usize>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Where the keywords of keyword-required digit rules reach: (keyword end, end plus the rule's
/// maximum distance), sorted; walked forward as the byte pass goes, run by run and (ahead of
/// that) block by block.
#[derive(Debug, Default)]
struct KeywordZones {
    zones: Vec<(usize, usize)>,
    runs: ZoneWalk,
    blocks: ZoneWalk,
}

/// How far a walk over the zones has come: the next zone, and the furthest reach of those before.
#[derive(Debug, Default, Clone, Copy)]
struct ZoneWalk {
    next: usize,
    reach: usize,
}

impl ZoneWalk {
    /// Whether a zone reaches `start..end`; calls come with `end` never decreasing.
    fn near(&mut self, zones: &[(usize, usize)], start: usize, end: usize) -> bool {
        while let Some(&(kw_end, reach)) = zones.get(self.next)
            && kw_end <= end
        {
            self.reach = self.reach.max(reach);
            self.next += 1;
        }
        self.reach >= start && self.next > 0
    }
}

impl KeywordZones {
    /// Starts over with these zones.
    fn reset<Z: IntoIterator<Item = (usize, usize)>>(&mut self, zones: impl Iterator<Item = Z>) {
        self.zones.clear();
        self.zones.extend(zones.flatten());
        self.zones.sort_unstable();
        self.runs = ZoneWalk::default();
        self.blocks = ZoneWalk::default();
    }

    /// Whether a zone reaches the run `start..end`; calls come with `end` never decreasing.
    fn near(&mut self, start: usize, end: usize) -> bool {
        self.runs.near(&self.zones, start, end)
    }

    /// The same for the blocks of the byte pass, walked separately.
    fn near_block(&mut self, start: usize, end: usize) -> bool {
        self.blocks.near(&self.zones, start, end)
    }
}

/// A place worth trying one rule's pattern.
#[derive(Debug, Clone, Copy)]
struct Event {
    rule: usize,
    start: usize,
    end: usize,
    /// The window starts at `start` and the match must end within the maximum distance (the
    /// event is a keyword's end).
    after_keyword: bool,
}

/// The windows stage two searches, per rule: byte ranges `(from, to)`, in the order their
/// events came (each source gives them in text order; they are sorted only when sources mix).
#[derive(Debug, Default)]
struct Events {
    windows: Vec<Vec<(usize, usize)>>,
    count: usize,
    /// Whether windows end where a byte no value is made of comes (see `Rule::made_of`); not
    /// on the reference path.
    trim: bool,
}

impl Events {
    fn reset(&mut self, rules: usize, trim: bool) {
        self.trim = trim;
        self.windows
            .resize_with(rules.max(self.windows.len()), Vec::new);
        for w in &mut self.windows {
            w.clear();
        }
        self.count = 0;
    }

    /// A trigger or digit run at `start..end` for `rule`.
    fn trigger(&mut self, rules: &[Rule], t: &[u8], rule: usize, start: usize, end: usize) {
        self.push(
            rules,
            t,
            Event {
                rule,
                start,
                end,
                after_keyword: false,
            },
        );
    }

    /// Adds the window an event opens for its rule's pattern.
    fn push(&mut self, rules: &[Rule], t: &[u8], e: Event) {
        let r = &rules[e.rule];
        let window = if e.after_keyword {
            // A value found from its keyword is on the keyword's line (the window keeps the
            // newline, which may end the value's pattern). The window reaches a value's length
            // past the distance so that no value is cut short; the distance itself is checked on
            // each match.
            let to = (e.start + r.max_distance + r.max_len).min(t.len());
            let to = memchr::memchr(b'\n', &t[e.start..to]).map_or(to, |n| e.start + n + 1);
            (e.start, to)
        } else if matches!(r.trigger, Trigger::Everywhere | Trigger::Keywords) {
            (e.start, e.end)
        } else {
            let from = e.start.saturating_sub(r.lead);
            let to = (e.end + r.trail).min(t.len());
            match r.made_of.filter(|_| self.trim) {
                // Values lie within the bytes they are made of around the trigger (look-around
                // assertions at the window's edges still see the text outside it).
                Some(made_of) => (
                    e.start
                        - t[from..e.start]
                            .iter()
                            .rev()
                            .take_while(|&&b| made_of(b))
                            .count(),
                    e.end + t[e.end..to].iter().take_while(|&&b| made_of(b)).count(),
                ),
                None => (from, to),
            }
        };
        self.windows[e.rule].push(window);
        self.count += 1;
    }
}

/// Single-byte triggers the byte pass finds (`@`, `+`, `:`, `-`); others go to the automaton.
const TRIGGER_BYTES: usize = 4;

/// Texts shorter than this (a CSV cell, a JSON value) go to the automaton even when Vectorscan is
/// there: its per-scan set-up would cost more than it saves.
#[cfg(feature = "vectorscan")]
const VECTORSCAN_MIN: usize = 256;

/// Fields longer than this are not searched whole for a keyword-triggered identifier when only
/// their context (a column header or JSON path) names it.
const CONTEXT_FIELD_MAX: usize = 4096;

impl Scanner {
    /// Every managed identifier, no allow list.
    pub fn managed() -> Scanner {
        // The managed table is constant and covered by tests; failing here is a build defect.
        ScannerBuilder::default()
            .build()
            .unwrap_or_else(|e| panic!("managed identifiers: {e}"))
    }

    pub fn builder() -> ScannerBuilder {
        ScannerBuilder::default()
    }

    fn new(
        rules: Vec<Rule>,
        allow: AllowList,
        prefilter: Prefilter,
    ) -> Result<Scanner, BuildError> {
        let mut patterns: Vec<Literal> = Vec::new();
        let mut roles: Vec<Vec<Role>> = Vec::new();
        let mut add = |text: &str, cased: bool, role: Role, patterns: &mut Vec<Literal>| {
            let text = if cased {
                text.to_owned()
            } else {
                text.to_ascii_lowercase()
            };
            let word_start = text
                .as_bytes()
                .first()
                .is_some_and(u8::is_ascii_alphanumeric)
                && match role {
                    Role::Keyword { .. } => true,
                    Role::Trigger { bounded, .. } => bounded,
                };
            match patterns
                .iter()
                .position(|x| x.text == text && x.cased == cased)
            {
                Some(i) => {
                    roles[i].push(role);
                    patterns[i].word_start &= word_start;
                }
                None => {
                    patterns.push(Literal {
                        text,
                        cased,
                        word_start,
                    });
                    roles.push(vec![role]);
                }
            }
        };
        let mut digit_rules = Vec::new();
        let mut everywhere = Vec::new();
        let mut byte_rules: Vec<Vec<usize>> = vec![Vec::new(); 256];
        let mut trigger_bytes: Vec<u8> = Vec::new();
        for (i, r) in rules.iter().enumerate() {
            match &r.trigger {
                Trigger::Literals {
                    literals,
                    word,
                    cased,
                    bounded,
                } => {
                    for l in literals {
                        if let [b] = l.as_bytes()
                            && !b.is_ascii_alphanumeric()
                            && (trigger_bytes.contains(b) || trigger_bytes.len() < TRIGGER_BYTES)
                        {
                            byte_rules[usize::from(*b)].push(i);
                            if !trigger_bytes.contains(b) {
                                trigger_bytes.push(*b);
                            }
                            continue;
                        }
                        add(
                            l,
                            *cased,
                            Role::Trigger {
                                rule: i,
                                word: *word,
                                bounded: *bounded,
                            },
                            &mut patterns,
                        );
                    }
                }
                Trigger::Digits { min } => digit_rules.push((i, *min)),
                Trigger::Keywords => {}
                Trigger::Everywhere => everywhere.push(i),
            }
            for k in &r.keywords {
                add(k, false, Role::Keyword { rule: i }, &mut patterns);
            }
        }
        let ac = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .kind(Some(AhoCorasickKind::DFA))
            .build(patterns.iter().map(|p| &p.text))
            .map_err(|e| BuildError::Automaton(e.to_string()))?;
        // Fewest digits first, so a short run stops looking early.
        digit_rules.sort_by_key(|d| d.1);
        let min_digits = digit_rules.first().map_or(usize::MAX, |d| d.1);
        // A run not glued to an uppercase letter holds at least a rule's digits and dots (those
        // whose digits always follow letters are found through the digits after them, or after
        // them and a separator).
        let free_min = |keywords: bool| {
            digit_rules
                .iter()
                .filter(|d| keywords || !rules[d.0].keyword_required)
                .filter(|d| rules[d.0].glue & LETTERS_BEFORE == 0)
                .map(|d| d.1 + usize::from(rules[d.0].dots))
                .min()
                .unwrap_or(8)
                .clamp(1, 8)
        };
        let (free_min_bytes, free_min_plain) = (free_min(true), free_min(false));
        let touching_triggers = byte_rules.iter().flatten().all(|&r| rules[r].touching);
        let partners = byte_rules
            .iter()
            .map(|rs| {
                let d = rs.first().map(|&r| rules[r].partner)?;
                (d > 0 && rs.iter().all(|&r| rules[r].partner == d)).then_some(usize::from(d))
            })
            .collect();
        let with = |flag: u8| -> Vec<(usize, usize)> {
            digit_rules
                .iter()
                .copied()
                .filter(|d| rules[d.0].glue & flag != 0)
                .collect()
        };
        let (lettered, letter_after) = (with(LETTERS_BEFORE), with(LETTER_AFTER));
        let (keyword_digit_rules, digit_rules): (Vec<_>, Vec<_>) = digit_rules
            .into_iter()
            .partition(|d| rules[d.0].keyword_required);
        let need = |list: &[(usize, usize)]| {
            let mut need = [usize::MAX; 4];
            for (dots, n) in need.iter_mut().enumerate() {
                *n = list
                    .iter()
                    .filter(|d| usize::from(rules[d.0].dots) <= dots)
                    .filter(|d| rules[d.0].glue & (LETTERS_BEFORE | LETTER_AFTER) == 0)
                    .map(|d| d.1)
                    .min()
                    .unwrap_or(usize::MAX);
            }
            need
        };
        let (need_plain, need_keyword) = (need(&digit_rules), need(&keyword_digit_rules));
        let mut fill = [trigger_bytes.first().copied().unwrap_or(0); TRIGGER_BYTES];
        fill[..trigger_bytes.len()].copy_from_slice(&trigger_bytes);
        let trigger_bytes = fill;
        #[cfg(feature = "vectorscan")]
        let (vectorscan, engine) = match prefilter {
            Prefilter::Rust => (None, String::from("Aho-Corasick (pure Rust)")),
            Prefilter::Auto => match crate::vectorscan::Literals::new(&patterns) {
                Ok(v) => (Some(v), crate::vectorscan::version()),
                Err(e) => (
                    None,
                    format!("Aho-Corasick (pure Rust; Vectorscan unusable: {e})"),
                ),
            },
        };
        #[cfg(not(feature = "vectorscan"))]
        let engine = {
            let _ = prefilter;
            String::from("Aho-Corasick (pure Rust)")
        };
        Ok(Scanner {
            rules,
            ac,
            literals: patterns,
            roles,
            #[cfg(feature = "vectorscan")]
            vectorscan,
            engine,
            digit_rules,
            min_digits,
            byte_rules,
            trigger_bytes,
            partners,
            touching_triggers,
            keyword_digit_rules,
            need_plain,
            need_keyword,
            lettered,
            letter_after,
            free_min_bytes,
            free_min_plain,
            everywhere,
            allow,
            reference: false,
        })
    }

    /// What finds literals and keywords: Vectorscan/Hyperscan and its version, or Aho-Corasick.
    pub fn engine(&self) -> &str {
        &self.engine
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn rule(&self, i: usize) -> &Rule {
        &self.rules[i]
    }

    /// What names a text (a CSV column header, the keys of a JSON path), prepared once: the
    /// rules with a keyword in it.
    pub fn context(&self, names: &str) -> Context {
        let names = names.to_lowercase();
        Context {
            rules: self
                .rules
                .iter()
                .map(|r| r.keywords.iter().any(|k| names.contains(k.as_str())))
                .collect(),
        }
    }

    /// Every value in `text`, in text order. With a context, a keyword in it counts as near
    /// every value in the text.
    pub fn scan(&self, text: &str, context: Option<&Context>) -> Vec<Hit> {
        // Buffers reused between calls on this thread (a scan of many small cells would
        // otherwise allocate them each time, a scan of a large text fault their pages in).
        SCRATCH.with_borrow_mut(|scratch| self.scan_with(text, context, scratch))
    }

    fn scan_with(&self, text: &str, context: Option<&Context>, scratch: &mut Scratch) -> Vec<Hit> {
        let t = text.as_bytes();
        let n = self.rules.len();
        let Scratch {
            keyword_ends,
            literal_hits,
            keyword_zones,
            events,
            next_from,
        } = scratch;
        keyword_ends.resize_with(n.max(keyword_ends.len()), Vec::new);
        for k in keyword_ends.iter_mut() {
            k.clear();
        }
        events.reset(n, !self.reference);
        next_from.clear();
        next_from.resize(n, 0);

        // Stage one: literals and keywords in one pass.
        let mut each = |role: Role, start: usize, end: usize| match role {
            Role::Keyword { rule } => {
                if !whole_word(t, start, end) {
                    return;
                }
                keyword_ends[rule].push(end);
                if matches!(self.rules[rule].trigger, Trigger::Keywords) {
                    events.push(
                        &self.rules,
                        t,
                        Event {
                            rule,
                            start: end,
                            end,
                            after_keyword: true,
                        },
                    );
                }
            }
            Role::Trigger {
                rule,
                word,
                bounded,
            } => {
                if word && t.get(end).is_some_and(u8::is_ascii_alphanumeric) {
                    return;
                }
                if bounded && start > 0 && t[start - 1].is_ascii_alphanumeric() {
                    return;
                }
                if self.rules[rule].precheck.is_some_and(|p| !p(t, start, end)) {
                    return;
                }
                events.trigger(&self.rules, t, rule, start, end);
            }
        };
        if !self.literals_vectorscan(t, literal_hits, &mut each) {
            for m in self.ac.find_overlapping_iter(text) {
                let p = m.pattern().as_usize();
                // The automaton ignores case for every pattern; a cased one is checked here.
                if self.literals[p].cased
                    && t[m.start()..m.end()] != *self.literals[p].text.as_bytes()
                {
                    continue;
                }
                for &role in &self.roles[p] {
                    each(role, m.start(), m.end());
                }
            }
        }

        for ends in keyword_ends.iter_mut() {
            ends.sort_unstable();
        }
        keyword_zones.reset(self.keyword_digit_rules.iter().map(|&(rule, _)| {
            let d = self.rules[rule].max_distance;
            keyword_ends[rule].iter().map(move |&e| (e, e + d))
        }));
        let no_context = vec![false; n];
        let in_context: &[bool] = context.map_or(&no_context, |c| &c.rules);
        let context_keyword = self
            .keyword_digit_rules
            .iter()
            .any(|&(rule, _)| in_context[rule]);
        for (i, r) in self.rules.iter().enumerate() {
            if in_context[i]
                && matches!(r.trigger, Trigger::Keywords)
                && t.len() <= CONTEXT_FIELD_MAX
            {
                events.trigger(&self.rules, t, i, 0, t.len());
            }
        }

        // Stage one, second half: digit runs and single-byte triggers.
        self.byte_pass(
            t,
            keyword_ends,
            keyword_zones,
            in_context,
            context_keyword,
            events,
        );
        for &rule in &self.everywhere {
            events.trigger(&self.rules, t, rule, 0, t.len());
        }

        // Stage two: each rule's pattern in the windows of its own events, overlapping windows
        // merged so that dense triggers cost one search, not one each.
        // Sized once: a vector grown by doubling would take fresh pages at every step.
        let mut hits = Vec::with_capacity(events.count);
        for (rule, windows) in events.windows.iter_mut().enumerate().take(n) {
            if !windows.is_sorted() {
                windows.sort_unstable();
            }
            let mut merged = windows.iter().copied();
            let Some((mut from, mut to)) = merged.next() else {
                continue;
            };
            let mut confirm = |from, to| {
                self.confirm(
                    text,
                    rule,
                    from,
                    to,
                    keyword_ends,
                    in_context[rule],
                    &mut hits,
                    next_from,
                );
            };
            for (start, end) in merged {
                if start <= to {
                    to = to.max(end);
                } else {
                    confirm(from, to);
                    (from, to) = (start, end);
                }
            }
            confirm(from, to);
        }
        // Each rule's hits are in text order: a stable sort merges those runs.
        hits.sort_by_key(|h| (h.start, std::cmp::Reverse(h.end), h.rule));
        self.drop_nested(&mut hits);
        hits
    }

    /// Digit runs and single-byte triggers, found 64 bytes at a time through bit masks of byte
    /// classes, so that only the runs that may hold a value are walked byte by byte (mixed text
    /// has a digit run every ten bytes: hex digests, UUIDs, timestamps). Pushes their events.
    fn byte_pass(
        &self,
        t: &[u8],
        keyword_ends: &[Vec<usize>],
        keyword_zones: &mut KeywordZones,
        in_context: &[bool],
        context_keyword: bool,
        events: &mut Events,
    ) {
        let len = t.len();
        let blocks = len.div_ceil(64);
        let load = |k: usize| -> Classes {
            match t.get(k * 64..) {
                Some(rest) if rest.len() >= 64 => classes(
                    rest[..64].try_into().unwrap_or(&[0; 64]),
                    &self.trigger_bytes,
                ),
                Some(rest) if !rest.is_empty() => {
                    // The last block, padded: nothing past the text's end is of any class
                    // (padding would look like a trigger when no rule has one, or NUL is one).
                    let mut block = [0u8; 64];
                    block[..rest.len()].copy_from_slice(rest);
                    classes(&block, &self.trigger_bytes).within(rest.len())
                }
                _ => Classes::default(),
            }
        };
        let (mut prev, mut cur) = (Classes::default(), load(0));
        // The top bits of the previous block's run and in-run separator masks.
        let (mut run_carry, mut sep_carry) = (0u64, 0u64);
        let mut cursor = 0;
        for k in 0..blocks {
            let next = load(k + 1);
            let base = k * 64;
            let run = runs(prev.digit, cur, next.digit);
            // The next block's run bytes, enough for the look-ahead from this one's last bytes.
            let run_next =
                next.digit | (next.sep & (next.digit << 1 | cur.digit >> 63) & (next.digit >> 1));
            let upper_before = cur.upper << 1 | prev.upper >> 63;
            let lower_before = cur.lower << 1 | prev.lower >> 63;
            let run_starts = run & !(run << 1 | run_carry);
            let in_run_sep = cur.sep & run;
            // Digits right after an uppercase letter (an IBAN's `GB82`): the run with its glue.
            let after_upper = cur.digit & upper_before;
            // Digits one separator after one (a NINO's `AB 12`): may suit a rule with a gap.
            let after_gapped_upper =
                cur.digit & (cur.sep << 1 | prev.sep >> 63) & (cur.upper << 2 | prev.upper >> 62);
            // Groups after a separator of a run: the free part of a run glued to a lowercase word.
            let after_sep = cur.digit & (in_run_sep << 1 | sep_carry);
            let wide = u128::from(run) | u128::from(run_next) << 64;
            // Where `free_min_bytes` run bytes start (`free_min_plain` where no keyword reaches
            // the two blocks): runs of 2, then 4, then 8 by doubling, and the largest of those
            // that fits joined with itself shifted to cover the rest.
            let reach = {
                let keyword = context_keyword || keyword_zones.near_block(base, base + 128);
                let k = if keyword {
                    self.free_min_bytes
                } else {
                    self.free_min_plain
                } as u32;
                let two = wide & wide >> 1;
                let four = two & two >> 2;
                let eight = four & four >> 4;
                let (p, runs) = match k {
                    0 | 1 => (1, wide),
                    2 | 3 => (2, two),
                    4..=7 => (4, four),
                    _ => (8, eight),
                };
                runs & runs >> (k.max(1) - p)
            };
            let mut candidates = if self.reference {
                run_starts | after_sep
            } else {
                (((run_starts & !upper_before & !lower_before) | after_sep) & reach as u64)
                    | after_upper
                    | after_gapped_upper
            };
            let digits_wide = u128::from(cur.digit) | u128::from(next.digit) << 64;
            let dots_wide = u128::from(cur.dot) | u128::from(next.dot) << 64;
            while candidates != 0 {
                let j = candidates.trailing_zeros();
                candidates &= candidates - 1;
                let at = base + j as usize;
                if at < cursor {
                    continue;
                }
                // A run that ends inside the two blocks is measured with the masks: too few
                // digits (for its dots) for any rule, and it is passed over unwalked.
                let len = (!(wide >> j)).trailing_zeros();
                let mut measured = None;
                if !self.reference && j + len < 127 {
                    let span = (1u128 << len) - 1;
                    // Most runs are digits alone, without dots: counted without a popcount
                    // (which is a dozen instructions on the baseline x86-64 this builds for).
                    let digits = (digits_wide >> j) & span;
                    let count = if digits == span {
                        len as usize
                    } else {
                        digits.count_ones() as usize
                    };
                    let dots = match (dots_wide >> j) & span {
                        0 => 0,
                        d => (d.count_ones() as usize).min(3),
                    };
                    let end = at + len as usize;
                    if after_upper >> j & 1 != 0 {
                        // Glued to a letter: tried for the rules whose digits follow letters if
                        // its letters suit one; the groups after its first are candidates of
                        // their own.
                        if !self.letters_suit(t, at, count) {
                            continue;
                        }
                    } else if count < self.need_plain[dots]
                        && (count < self.need_keyword[dots]
                            || !(context_keyword || keyword_zones.near(at, end)))
                        && !(after_gapped_upper >> j & 1 != 0 && self.letters_suit(t, at, count))
                        && !self.letter_follows(t, end, count)
                    {
                        cursor = end;
                        continue;
                    }
                    measured = Some((end, count));
                }
                cursor = self.digit_candidate(
                    t,
                    at,
                    measured,
                    keyword_ends,
                    keyword_zones,
                    in_context,
                    events,
                );
            }
            let mut triggers = cur.trigger;
            if self.touching_triggers && !self.reference {
                let word = |c: &Classes| c.digit | c.lower | c.upper;
                let before = word(&cur) << 1 | word(&prev) >> 63;
                let after = word(&cur) >> 1 | word(&next) << 63;
                triggers &= before | after | (cur.trigger >> 1 | next.trigger << 63);
            }
            while triggers != 0 {
                let at = base + triggers.trailing_zeros() as usize;
                triggers &= triggers - 1;
                let b = t[at];
                // The byte that every rule it starts wants again further on (a MAC address's
                // separators) is passed over where it does not come again.
                if let Some(d) = self.partners[usize::from(b)]
                    && t.get(at + d) != Some(&b)
                {
                    continue;
                }
                for &rule in &self.byte_rules[usize::from(b)] {
                    if self.rules[rule].precheck.is_none_or(|p| p(t, at, at + 1)) {
                        events.trigger(&self.rules, t, rule, at, at + 1);
                    }
                }
            }
            run_carry = run >> 63;
            sep_carry = in_run_sep >> 63;
            prev = cur;
            cur = next;
        }
    }

    /// Whether a run of `count` digits starting at `at` has the letters before it that a rule
    /// whose digits follow letters wants (`GB` of `GB82`, `AB ` of `AB 12 34 56 C`).
    fn letters_suit(&self, t: &[u8], at: usize, count: usize) -> bool {
        if self.lettered.first().is_none_or(|&(_, min)| count < min) {
            return false;
        }
        let (letters, gap) = letters_before(t, at);
        self.lettered.iter().any(|&(rule, min)| {
            let r = &self.rules[rule];
            count >= min
                && (r.letters.0..=r.letters.1).contains(&letters)
                && (gap == 0 || gap == r.gap)
        })
    }

    /// Whether a run of `count` digits ending at `end` has the letter after it that a rule whose
    /// digits precede one wants (a DNI's `Z` or `-Z`), after a group of the rule's digits.
    fn letter_follows(&self, t: &[u8], end: usize, count: usize) -> bool {
        self.letter_after.iter().any(|&(rule, min)| {
            count >= min
                && t[end.saturating_sub(min)..end]
                    .iter()
                    .all(u8::is_ascii_digit)
                && letter_after(t, end, self.rules[rule].gap)
        })
    }

    /// The digit run starting at `at` (a candidate of the byte pass): events for the digit
    /// identifiers it may hold. Returns where the run ends. `measured`: its end and digit count
    /// where the bit masks gave them (as `digit_run` would); else the run is walked.
    #[allow(clippy::too_many_arguments)]
    fn digit_candidate(
        &self,
        t: &[u8],
        at: usize,
        measured: Option<(usize, usize)>,
        keyword_ends: &[Vec<usize>],
        keyword_zones: &mut KeywordZones,
        in_context: &[bool],
        events: &mut Events,
    ) -> usize {
        let (run_start, run_end, run_count) = match measured {
            Some((end, count)) => (at, end, count),
            None => digit_run(t, at),
        };
        debug_assert_eq!((run_start, run_end, run_count), digit_run(t, at));
        if run_count < self.min_digits {
            return run_end;
        }
        // A digit group glued to a word (the digits of a digest, a UUID, an identifier like
        // `v2` or `sha256`) is only for identifiers whose digits may touch letters.
        let word = |b: u8| b.is_ascii_alphabetic() || b == b'_';
        let glued_before = run_start > 0 && word(t[run_start - 1]);
        let glued_after = t.get(run_end).is_some_and(|&b| word(b));
        // What a rule's value needs of the run it lies in, checked before anything else (and
        // before `rule_span`, which counts on it): its dots and dashes, and the letters before
        // or after its digits.
        let (dots, dashes) = t[run_start..run_end].iter().fold((0u8, 0u8), |(d, s), &b| {
            (
                d.saturating_add(u8::from(b == b'.')),
                s.saturating_add(u8::from(b == b'-')),
            )
        });
        let shape_suits = |r: &Rule| {
            dots >= r.dots
                && dashes >= r.dashes
                && (r.glue & LETTERS_BEFORE == 0
                    || glued_before
                    || (r.gap != 0
                        && run_start >= 2
                        && t[run_start - 1] == r.gap
                        && t[run_start - 2].is_ascii_uppercase()))
                && (r.glue & LETTER_AFTER == 0 || letter_after(t, run_end, r.gap))
        };
        // The run less its first group, its last, or both: computed once each when a rule wants
        // it.
        let mut free = [None; 3];
        let mut rule_span = |rule: usize, min: usize| -> Option<(usize, usize)> {
            let r = &self.rules[rule];
            let cut_first = glued_before && r.glue & crate::rules::GLUE_BEFORE == 0;
            let cut_last = glued_after && r.glue & crate::rules::GLUE_AFTER == 0;
            let (start, end) = match (cut_first, cut_last) {
                (false, false) => (run_start, run_end),
                _ => {
                    let which = usize::from(cut_first) * 2 + usize::from(cut_last) - 1;
                    let free = *free[which].get_or_insert_with(|| {
                        free_groups(t, run_start, run_end, run_count, cut_first, cut_last)
                    });
                    match free {
                        Some((s, e, c)) if c >= min => (s, e),
                        _ => return None,
                    }
                }
            };
            r.precheck
                .is_none_or(|p| p(t, start, end))
                .then_some((start, end))
        };
        for &(rule, min) in &self.digit_rules {
            if run_count < min {
                break;
            }
            if !shape_suits(&self.rules[rule]) {
                continue;
            }
            if let Some((start, end)) = rule_span(rule, min) {
                events.trigger(&self.rules, t, rule, start, end);
            }
        }
        // Keyword-required rules: first whether any of their keywords is in reach of the run
        // (candidates come in text order, so the zones are walked once), then each rule's own.
        let any_keyword = keyword_zones.near(run_start, run_end);
        for &(rule, min) in &self.keyword_digit_rules {
            if run_count < min {
                break;
            }
            if (!in_context[rule] && !any_keyword) || !shape_suits(&self.rules[rule]) {
                continue;
            }
            let Some((start, end)) = rule_span(rule, min) else {
                continue;
            };
            if !in_context[rule]
                && !keyword_in_reach(
                    &keyword_ends[rule],
                    start,
                    end,
                    self.rules[rule].max_distance,
                )
            {
                continue;
            }
            events.trigger(&self.rules, t, rule, start, end);
        }
        run_end
    }

    /// Stage one on Vectorscan, when there is one and the text is worth its set-up; false when
    /// the caller is to use the automaton instead (nothing was reported then).
    #[cfg(feature = "vectorscan")]
    fn literals_vectorscan(
        &self,
        t: &[u8],
        found: &mut Vec<(usize, usize, usize)>,
        each: &mut impl FnMut(Role, usize, usize),
    ) -> bool {
        let Some(v) = &self.vectorscan else {
            return false;
        };
        if t.len() < VECTORSCAN_MIN {
            return false;
        }
        // Vectorscan reports by end; a failed scan (it does not fail on valid input) is redone
        // by the automaton, so what was reported is collected first.
        found.clear();
        if v.scan(t, |p, start, end| found.push((p, start, end)))
            .is_err()
        {
            return false;
        }
        for &(p, start, end) in found.iter() {
            for &role in &self.roles[p] {
                each(role, start, end);
            }
        }
        true
    }

    #[cfg(not(feature = "vectorscan"))]
    fn literals_vectorscan(
        &self,
        _t: &[u8],
        _found: &mut Vec<(usize, usize, usize)>,
        _each: &mut impl FnMut(Role, usize, usize),
    ) -> bool {
        false
    }

    #[allow(clippy::too_many_arguments)]
    fn confirm(
        &self,
        text: &str,
        rule: usize,
        from: usize,
        to: usize,
        keyword_ends: &[Vec<usize>],
        in_context: bool,
        hits: &mut Vec<Hit>,
        next_from: &mut [usize],
    ) {
        let r = &self.rules[rule];
        let from = from.max(next_from[rule]);
        if from >= to {
            return;
        }
        let input = Input::new(text).range(from..to);
        let mut record = |whole_end: usize, start: usize, end: usize| {
            let Some(value) = text.get(start..end) else {
                return;
            };
            if r.validator.is_some_and(|v| !v(value)) {
                return;
            }
            if !r.ignore_words.is_empty() {
                let lower = value.to_lowercase();
                if r.ignore_words.iter().any(|w| lower.contains(w.as_str())) {
                    return;
                }
            }
            if r.keyword_required
                && !in_context
                && !keyword_before(&keyword_ends[rule], start, end, r.max_distance)
            {
                return;
            }
            if !self.allow.is_empty() && self.allow.allows(value) {
                return;
            }
            hits.push(Hit { rule, start, end });
            next_from[rule] = next_from[rule].max(whole_end);
        };
        if let Some(find) = r.finder.filter(|_| !self.reference)
            && find(text.as_bytes(), from, to, &mut |start, end| {
                record(end, start, end)
            })
        {
            return;
        }
        if r.group {
            for caps in r.regex.captures_iter(input) {
                let (Some(whole), Some(g)) = (caps.get_match(), caps.get_group(1)) else {
                    continue;
                };
                record(whole.end(), g.start, g.end);
            }
        } else {
            for m in r.regex.find_iter(input) {
                record(m.end(), m.start(), m.end());
            }
        }
    }

    /// A value inside a longer value of another identifier (the host of a basic-auth URL that
    /// looks like an email address, the digits of an IBAN) belongs to that one.
    fn drop_nested(&self, hits: &mut Vec<Hit>) {
        // A generic identifier (a high-entropy secret, a password in a config line) yields to a
        // specific one it overlaps: `token: ghp_…` is a GitHub token. Overlapping hits sit near
        // each other in start order; looking 16 either way covers any real text.
        let level = |h: &Hit| self.rules[h.rule].generic;
        let overlaps = |a: &Hit, b: &Hit| a.start < b.end && b.start < a.end;
        let keep: Vec<bool> = (0..hits.len())
            .map(|i| {
                let h = &hits[i];
                level(h) == 0
                    || !hits[i.saturating_sub(16)..(i + 17).min(hits.len())]
                        .iter()
                        .any(|o| level(o) < level(h) && overlaps(o, h))
            })
            .collect();
        let mut k = keep.into_iter();
        hits.retain(|_| k.next().unwrap_or(true));
        let mut cover: Option<Hit> = None;
        hits.retain(|h| {
            if let Some(c) = cover
                && self.rules[c.rule].generic <= self.rules[h.rule].generic
                && c.rule != h.rule
                && c.start <= h.start
                && h.end <= c.end
                && (c.end - c.start) > (h.end - h.start)
            {
                return false;
            }
            if cover.is_none_or(|c| h.end > c.end) {
                cover = Some(*h);
            }
            true
        });
        // One value found by two declarations of the same identifier counts once.
        hits.dedup_by(|a, b| {
            a.start == b.start && a.end == b.end && self.rules[a.rule].id == self.rules[b.rule].id
        });
    }
}

/// Whether a keyword ends at most `distance` before `start`, or inside `start..end` (a trigger
/// that may hold a value later in it). `ends` is sorted.
fn keyword_in_reach(ends: &[usize], start: usize, end: usize, distance: usize) -> bool {
    let i = ends.partition_point(|&e| e <= end);
    i > 0 && ends[i - 1] + distance >= start
}

/// Whether a keyword ends before `start` and at most `distance` before `end` (Macie's maximum
/// match distance: from the end of the keyword to the end of the value). `ends` is sorted.
fn keyword_before(ends: &[usize], start: usize, end: usize, distance: usize) -> bool {
    let i = ends.partition_point(|&e| e <= start);
    i > 0 && end - ends[i - 1] <= distance
}

/// Whether `t[start..end]` is not part of a longer word (for keywords that begin or end with a
/// letter or digit).
fn whole_word(t: &[u8], start: usize, end: usize) -> bool {
    let alnum = |b: &u8| b.is_ascii_alphanumeric();
    let first_alnum = t.get(start).is_some_and(alnum);
    let last_alnum = end > 0 && t.get(end - 1).is_some_and(alnum);
    let glued_before = first_alnum && start > 0 && alnum(&t[start - 1]);
    let glued_after = last_alnum && t.get(end).is_some_and(alnum);
    !glued_before && !glued_after
}

/// Bit masks of one 64-byte block (bit i for byte i): digits, the separators a digit run may
/// hold (space `-` `.` `/`), lowercase letters and `_`, uppercase letters, single-byte triggers,
/// dots.
#[derive(Debug, Clone, Copy, Default)]
struct Classes {
    digit: u64,
    sep: u64,
    lower: u64,
    upper: u64,
    trigger: u64,
    dot: u64,
}

/// The classes of a block, sixteen bytes at a time with SIMD compares (SSE2 on x86-64, NEON on
/// ARM, plain code elsewhere).
fn classes(block: &[u8; 64], triggers: &[u8; TRIGGER_BYTES]) -> Classes {
    use wide::i8x16;
    // Bytes as signed: `b as i8`, the same bits.
    let splat = |b: u8| i8x16::splat(b as i8);
    let mut c = Classes::default();
    for (k, chunk) in block.chunks_exact(16).enumerate() {
        let bytes: [u8; 16] = chunk.try_into().unwrap_or([0; 16]);
        let v: i8x16 = wide::bytemuck::cast(bytes);
        let trigger = triggers
            .iter()
            .fold(i8x16::ZERO, |m, &b| m | v.simd_eq(splat(b)));
        let bits = |m: i8x16| u64::from(m.to_bitmask()) << (k * 16);
        // `n` bytes from `lo` on: shifted so that they are the `n` smallest signed values, then
        // one signed compare (SSE2 has no unsigned one).
        let range = |lo: u8, n: u8| (v + splat(0x80u8.wrapping_sub(lo))).simd_lt(splat(0x80 + n));
        c.digit |= bits(range(b'0', 10));
        c.sep |= bits(v.simd_eq(splat(b' ')) | range(b'-', 3));
        c.lower |= bits(range(b'a', 26) | v.simd_eq(splat(b'_')));
        c.upper |= bits(range(b'A', 26));
        c.trigger |= bits(trigger);
        c.dot |= bits(v.simd_eq(splat(b'.')));
    }
    c
}

impl Classes {
    /// Only the first `n` bytes' bits.
    fn within(self, n: usize) -> Classes {
        let keep = if n >= 64 { u64::MAX } else { (1u64 << n) - 1 };
        Classes {
            digit: self.digit & keep,
            sep: self.sep & keep,
            lower: self.lower & keep,
            upper: self.upper & keep,
            trigger: self.trigger & keep,
            dot: self.dot & keep,
        }
    }
}

/// The bytes of digit runs in a block: digits, and separators with a digit on each side (as
/// `digit_run` walks them).
fn runs(prev_digit: u64, cur: Classes, next_digit: u64) -> u64 {
    let before = cur.digit << 1 | prev_digit >> 63;
    let after = cur.digit >> 1 | next_digit << 63;
    cur.digit | (cur.sep & before & after)
}

/// The part of a digit run an identifier may use when it is glued to a word: without its first
/// group (glued to a letter before), without its last (glued to one after); with its digit
/// count. `None` when nothing is left.
fn free_groups(
    t: &[u8],
    start: usize,
    end: usize,
    count: usize,
    cut_first: bool,
    cut_last: bool,
) -> Option<(usize, usize, usize)> {
    let (mut s, mut e, mut c) = (start, end, count);
    if cut_first {
        let cut = t[s..e].iter().position(|b| !b.is_ascii_digit())?;
        c -= cut;
        s += cut + 1;
    }
    if cut_last {
        let cut = t[s..e].iter().rposition(|b| !b.is_ascii_digit())?;
        c -= e - (s + cut + 1);
        e = s + cut;
    }
    (s < e).then_some((s, e, c))
}

/// The uppercase letters right before `at`, after one space or dash if that comes first: how
/// many (counted to 8), and that byte (0 for none). None are counted when a letter or digit
/// comes before them (no pattern's word boundary holds there).
fn letters_before(t: &[u8], at: usize) -> (u8, u8) {
    let mut i = at;
    let mut gap = 0;
    if i > 0 && matches!(t[i - 1], b' ' | b'-') {
        gap = t[i - 1];
        i -= 1;
    }
    let mut letters = 0;
    while letters < 8 && i > 0 && t[i - 1].is_ascii_uppercase() {
        letters += 1;
        i -= 1;
    }
    if letters < 8 && i > 0 && t[i - 1].is_ascii_alphanumeric() {
        letters = 0;
    }
    (letters, gap)
}

/// Whether a letter comes at `end`, or after a `gap` byte there (0: no gap allowed).
fn letter_after(t: &[u8], end: usize, gap: u8) -> bool {
    let letter = |i: usize| t.get(i).is_some_and(u8::is_ascii_alphabetic);
    letter(end) || (gap != 0 && t.get(end) == Some(&gap) && letter(end + 1))
}

/// The run of digits starting at `start` (single spaces, dashes, dots or slashes may separate
/// groups): its start, end and number of digits.
fn digit_run(t: &[u8], start: usize) -> (usize, usize, usize) {
    let len = t.len();
    let mut i = start;
    let mut count = 0;
    loop {
        while i < len && t[i].is_ascii_digit() {
            count += 1;
            i += 1;
        }
        if i + 1 < len && matches!(t[i], b' ' | b'-' | b'.' | b'/') && t[i + 1].is_ascii_digit() {
            i += 1;
            continue;
        }
        return (start, i, count);
    }
}
