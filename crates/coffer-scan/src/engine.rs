//! Matching in two stages. One pass of an Aho-Corasick automaton over every identifier's literals
//! and keywords, and one pass that finds runs of digits, give the places worth looking at; then
//! each identifier's pattern runs only in a small window around its own triggers, and its
//! validator, keywords, ignore words and the allow list decide what is a finding.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use regex_automata::Input;
use regex_automata::meta::Regex;

use crate::rules::{CustomError, CustomIdentifier, Rule, Trigger};

/// A value an identifier found: the rule's index and the value's byte range in the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub rule: usize,
    pub start: usize,
    pub end: usize,
}

#[derive(Debug, Clone, Copy)]
enum Role {
    Trigger { rule: usize, word: bool },
    Keyword { rule: usize },
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

impl ScannerBuilder {
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
        Scanner::new(rules, self.allow)
    }
}

/// The compiled identifiers and prefilter; shared by every thread that scans.
#[derive(Debug)]
pub struct Scanner {
    rules: Vec<Rule>,
    ac: AhoCorasick,
    /// Per pattern: what it means, and where (offset, length) — a pattern also stands for every
    /// other pattern inside it, since the automaton reports leftmost-longest matches only.
    roles: Vec<Vec<(Role, usize, usize)>>,
    /// Rules triggered by digit runs, and the fewest digits any of them needs.
    digit_rules: Vec<(usize, usize)>,
    min_digits: usize,
    /// Rules triggered by a single byte (`@`, `:`, `+`, `-`): found by the byte pass, not the
    /// automaton, where such frequent matches would cost a callback each.
    byte_rules: Vec<Vec<usize>>,
    /// Per byte: 1 a digit, 2 a single-byte trigger.
    byte_class: [u8; 256],
    everywhere: Vec<usize>,
    allow: AllowList,
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
    events: Vec<Event>,
    next_from: Vec<usize>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
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

    fn new(rules: Vec<Rule>, allow: AllowList) -> Result<Scanner, BuildError> {
        let mut patterns: Vec<String> = Vec::new();
        let mut roles: Vec<Vec<Role>> = Vec::new();
        let mut add = |p: &str, role: Role, patterns: &mut Vec<String>| match patterns
            .iter()
            .position(|x| x == p)
        {
            Some(i) => roles[i].push(role),
            None => {
                patterns.push(p.to_owned());
                roles.push(vec![role]);
            }
        };
        let mut digit_rules = Vec::new();
        let mut everywhere = Vec::new();
        let mut byte_rules: Vec<Vec<usize>> = vec![Vec::new(); 256];
        let mut byte_class = [0u8; 256];
        for b in b'0'..=b'9' {
            byte_class[usize::from(b)] = 1;
        }
        for (i, r) in rules.iter().enumerate() {
            match &r.trigger {
                Trigger::Literals { literals, word } => {
                    for l in literals {
                        if let [b] = l.as_bytes()
                            && !b.is_ascii_alphanumeric()
                        {
                            byte_rules[usize::from(*b)].push(i);
                            byte_class[usize::from(*b)] |= 2;
                            continue;
                        }
                        add(
                            l,
                            Role::Trigger {
                                rule: i,
                                word: *word,
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
                add(k, Role::Keyword { rule: i }, &mut patterns);
            }
        }
        // Leftmost-longest matching reports `routing number`, not the `routing` inside it (nor
        // `pass` inside `password`): each pattern carries the roles of the patterns within it.
        let mut placed: Vec<Vec<(Role, usize, usize)>> = roles
            .iter()
            .zip(&patterns)
            .map(|(rs, p)| rs.iter().map(|&r| (r, 0, p.len())).collect())
            .collect();
        for (qi, q) in patterns.iter().enumerate() {
            for (pi, p) in patterns.iter().enumerate() {
                if pi == qi || p.len() >= q.len() {
                    continue;
                }
                for (off, _) in q.match_indices(p.as_str()) {
                    placed[qi].extend(roles[pi].iter().map(|&r| (r, off, p.len())));
                }
            }
        }
        let ac = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostLongest)
            .kind(Some(AhoCorasickKind::DFA))
            .build(&patterns)
            .map_err(|e| BuildError::Automaton(e.to_string()))?;
        // Fewest digits first, so a short run stops looking early.
        digit_rules.sort_by_key(|d| d.1);
        let min_digits = digit_rules.first().map_or(usize::MAX, |d| d.1);
        Ok(Scanner {
            rules,
            ac,
            roles: placed,
            digit_rules,
            min_digits,
            byte_rules,
            byte_class,
            everywhere,
            allow,
        })
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
            events,
            next_from,
        } = scratch;
        keyword_ends.resize_with(n.max(keyword_ends.len()), Vec::new);
        for k in keyword_ends.iter_mut() {
            k.clear();
        }
        events.clear();
        next_from.clear();
        next_from.resize(n, 0);

        // Stage one: literals and keywords in one automaton pass.
        for m in self.ac.find_iter(text) {
            for &(role, off, len) in &self.roles[m.pattern().as_usize()] {
                let (start, end) = (m.start() + off, m.start() + off + len);
                match role {
                    Role::Keyword { rule } => {
                        if !whole_word(t, start, end) {
                            continue;
                        }
                        keyword_ends[rule].push(end);
                        if matches!(self.rules[rule].trigger, Trigger::Keywords) {
                            events.push(Event {
                                rule,
                                start: end,
                                end,
                                after_keyword: true,
                            });
                        }
                    }
                    Role::Trigger { rule, word } => {
                        if word && t.get(end).is_some_and(u8::is_ascii_alphanumeric) {
                            continue;
                        }
                        if self.rules[rule].precheck.is_some_and(|p| !p(t, start, end)) {
                            continue;
                        }
                        events.push(Event {
                            rule,
                            start,
                            end,
                            after_keyword: false,
                        });
                    }
                }
            }
        }

        for ends in keyword_ends.iter_mut() {
            ends.sort_unstable();
        }
        let no_context = vec![false; n];
        let in_context: &[bool] = context.map_or(&no_context, |c| &c.rules);
        for (i, r) in self.rules.iter().enumerate() {
            if in_context[i]
                && matches!(r.trigger, Trigger::Keywords)
                && t.len() <= CONTEXT_FIELD_MAX
            {
                events.push(Event {
                    rule: i,
                    start: 0,
                    end: t.len(),
                    after_keyword: false,
                });
            }
        }

        // Stage one, second half: runs of digits and single-byte triggers, in one pass.
        let mut i = 0;
        let len = t.len();
        while i < len {
            // Eight bytes at a time past text with nothing in 0x2B..=0x40 (`+ , - . /`, digits,
            // `: ; < = > ? @`), the range every digit and single-byte trigger is in.
            if let Some(word) = t.get(i..i + 8) {
                let mask = between_2a_41(u64::from_le_bytes(word.try_into().unwrap_or([0; 8])));
                if mask == 0 {
                    i += 8;
                    continue;
                }
                i += (mask.trailing_zeros() / 8) as usize;
            }
            let class = self.byte_class[usize::from(t[i])];
            if class == 0 {
                i += 1;
                continue;
            }
            if class & 2 != 0 {
                for &rule in &self.byte_rules[usize::from(t[i])] {
                    if self.rules[rule].precheck.is_none_or(|p| p(t, i, i + 1)) {
                        events.push(Event {
                            rule,
                            start: i,
                            end: i + 1,
                            after_keyword: false,
                        });
                    }
                }
            }
            if class & 1 == 0 {
                i += 1;
                continue;
            }
            let (run_start, run_end, run_count) = digit_run(t, i);
            i = run_end;
            if run_count < self.min_digits {
                continue;
            }
            // A digit group glued to a word (the digits of a digest, a UUID, an identifier like
            // `v2` or `sha256`) is only for identifiers whose digits may touch letters.
            let word = |b: u8| b.is_ascii_alphabetic() || b == b'_';
            let glued_before = run_start > 0 && word(t[run_start - 1]);
            let glued_after = t.get(run_end).is_some_and(|&b| word(b));
            let free = free_groups(t, run_start, run_end, run_count, glued_before, glued_after);
            for &(rule, min) in &self.digit_rules {
                if run_count < min {
                    break;
                }
                let r = &self.rules[rule];
                let allowed = (!glued_before || r.glue & crate::rules::GLUE_BEFORE != 0)
                    && (!glued_after || r.glue & crate::rules::GLUE_AFTER != 0);
                let (start, end) = if allowed {
                    (run_start, run_end)
                } else {
                    match free {
                        Some((s, e, c)) if c >= min => (s, e),
                        _ => continue,
                    }
                };
                if r.precheck.is_some_and(|p| !p(t, start, end)) {
                    continue;
                }
                // A keyword-required rule is tried only with a keyword in reach.
                if r.keyword_required
                    && !in_context[rule]
                    && !keyword_in_reach(&keyword_ends[rule], start, end, r.max_distance)
                {
                    continue;
                }
                events.push(Event {
                    rule,
                    start,
                    end,
                    after_keyword: false,
                });
            }
        }
        for &rule in &self.everywhere {
            events.push(Event {
                rule,
                start: 0,
                end: t.len(),
                after_keyword: false,
            });
        }

        // Stage two: each rule's pattern in the windows of its own events, overlapping windows
        // merged so that dense triggers cost one search, not one each.
        events.sort_unstable_by_key(|e| (e.rule, e.start));
        let mut hits = Vec::new();
        let mut windows: Vec<(usize, usize, usize)> = Vec::new();
        for e in events.iter() {
            let r = &self.rules[e.rule];
            let (from, to) = if e.after_keyword {
                // A value found from its keyword is on the keyword's line (the window keeps the
                // newline, which may end the value's pattern). The window reaches a value's
                // length past the distance so that no value is cut short; the distance itself is
                // checked on each match.
                let to = (e.start + r.max_distance + r.max_len).min(t.len());
                let to = memchr::memchr(b'\n', &t[e.start..to]).map_or(to, |n| e.start + n + 1);
                (e.start, to)
            } else if matches!(r.trigger, Trigger::Everywhere | Trigger::Keywords) {
                (e.start, e.end)
            } else {
                (
                    e.start.saturating_sub(r.max_len),
                    (e.end + r.max_len).min(t.len()),
                )
            };
            match windows.last_mut() {
                Some((rule, _, cur_to)) if *rule == e.rule && from <= *cur_to => {
                    *cur_to = (*cur_to).max(to);
                }
                _ => windows.push((e.rule, from, to)),
            }
        }
        for (rule, from, to) in windows {
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
        }
        hits.sort_unstable_by_key(|h| (h.start, std::cmp::Reverse(h.end), h.rule));
        self.drop_nested(&mut hits);
        hits
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

/// A word with the high bit set in (at least) the lowest byte that lies strictly between 0x2A
/// and 0x41; zero if none does. (Bit-twiddling "hasbetween": exact for the lowest such byte;
/// bytes at or above 0x80 never count.)
fn between_2a_41(x: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const LOW7: u64 = ONES * 127;
    let m = 0x2a;
    let n = 0x41;
    (ONES * (127 + n) - (x & LOW7)) & !x & ((x & LOW7) + ONES * (127 - m)) & (ONES * 128)
}

/// The part of a digit run not glued to a word: without its first group when a letter comes
/// right before, without its last when one comes right after; with its digit count. `None` when
/// nothing is left.
fn free_groups(
    t: &[u8],
    start: usize,
    end: usize,
    count: usize,
    glued_before: bool,
    glued_after: bool,
) -> Option<(usize, usize, usize)> {
    let (mut s, mut e, mut c) = (start, end, count);
    if glued_before {
        let cut = t[s..e].iter().position(|b| !b.is_ascii_digit())?;
        c -= cut;
        s += cut + 1;
    }
    if glued_after {
        let cut = t[s..e].iter().rposition(|b| !b.is_ascii_digit())?;
        c -= e - (s + cut + 1);
        e = s + cut;
    }
    (s < e).then_some((s, e, c))
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
