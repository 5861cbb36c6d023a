//! Access anomalies from the audit log: a baseline per principal (requests, bytes read, distinct
//! objects and keys, errors and access denials per active hour; the source IPs, keys and hours of
//! day it uses), and an alert when the latest window departs strongly from it — a principal that
//! usually reads ten objects an hour reads ten thousand, or decrypts with keys it never used.
//!
//! Events are CloudTrail-shaped (what Coffer's audit log and `coffer audit export` hold).
//! Volume signals are strong: one alone raises an alert. New keys, new source IPs and hours the
//! principal was never active are weak: two together raise one. Thresholds sit well above each
//! principal's own busiest hour, so ordinary variation (daily peaks, quiet nights, a busy Monday)
//! raises nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::Serialize;
use serde_json::Value;

/// What the detector needs of one audit event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Seconds since the Unix epoch.
    pub time: i64,
    /// The principal's ARN (or, unauthenticated, the access key id it claimed).
    pub principal: String,
    pub access_key: Option<String>,
    pub source_ip: Option<String>,
    pub event_name: String,
    pub error_code: Option<String>,
    /// Bytes sent to the caller (an object read).
    pub bytes_out: u64,
    /// S3 objects (ARNs) the event touched.
    pub objects: Vec<String>,
    /// KMS keys (ARNs) the event used.
    pub keys: Vec<String>,
}

/// The user agent prefix of Coffer's discovery reads.
pub const DISCOVERY_AGENT: &str = "coffer-discovery/";

impl Event {
    /// Reads a CloudTrail-shaped event; `None` for records that are not a principal's request
    /// (server start-up, operator actions without a principal) and for reads by Coffer's own
    /// sensitive-data discovery (user agent `coffer-discovery/…`), which are the service's work
    /// on the principal's behalf, not the principal's behaviour.
    pub fn from_cloudtrail(v: &Value) -> Option<Event> {
        if v.get("userAgent")
            .and_then(Value::as_str)
            .is_some_and(|a| a.starts_with(DISCOVERY_AGENT))
        {
            return None;
        }
        let time = parse_time(v.get("eventTime")?.as_str()?)?;
        let identity = v.get("userIdentity")?;
        let access_key = identity
            .get("accessKeyId")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let principal = identity
            .get("arn")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| access_key.clone())?;
        let mut objects = Vec::new();
        let mut keys = Vec::new();
        for r in v
            .get("resources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let arn = r.get("ARN").and_then(Value::as_str).unwrap_or_default();
            match r.get("type").and_then(Value::as_str) {
                Some("AWS::S3::Object") => objects.push(arn.to_owned()),
                Some("AWS::KMS::Key") => keys.push(arn.to_owned()),
                _ => {}
            }
        }
        Some(Event {
            time,
            principal,
            access_key,
            source_ip: v
                .get("sourceIPAddress")
                .and_then(Value::as_str)
                .map(str::to_owned),
            event_name: v
                .get("eventName")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            error_code: v
                .get("errorCode")
                .and_then(Value::as_str)
                .map(str::to_owned),
            bytes_out: v
                .pointer("/additionalEventData/bytesTransferredOut")
                .and_then(Value::as_u64)
                .unwrap_or(0),
            objects,
            keys,
        })
    }

    fn denied(&self) -> bool {
        self.error_code
            .as_deref()
            .is_some_and(|c| c.contains("AccessDenied") || c == "UnauthorizedOperation")
    }
}

/// `2026-11-23T07:30:22Z` (or with fractional seconds) to Unix seconds.
pub fn parse_time(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// How the detector decides.
#[derive(Debug, Clone)]
pub struct Config {
    /// Seconds of history before the window that make the baseline.
    pub baseline: i64,
    /// Seconds of the window judged (ending at `now`).
    pub window: i64,
    /// A principal needs this many active hours in its baseline to be judged at all.
    pub min_active_hours: usize,
    /// How far above its busiest baseline hour a metric must go.
    pub factor: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            baseline: 28 * 86_400,
            window: 3_600,
            min_active_hours: 24,
            factor: 5.0,
        }
    }
}

/// One way the window departs from the baseline.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Signal {
    pub signal: &'static str,
    pub strong: bool,
    pub observed: f64,
    /// The principal's typical value (median active hour) or, for sets, how many it knew.
    pub typical: f64,
    /// The value the observation had to exceed.
    pub threshold: f64,
    pub detail: String,
}

/// An alert: a principal whose window departs strongly from its baseline.
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    pub principal: String,
    pub access_keys: Vec<String>,
    pub window_start: i64,
    pub window_end: i64,
    pub severity: crate::Severity,
    pub signals: Vec<Signal>,
}

#[derive(Debug, Default, Clone)]
struct Hour {
    requests: u64,
    bytes: u64,
    errors: u64,
    denied: u64,
    objects: HashSet<String>,
    keys: HashSet<String>,
}

#[derive(Debug, Default)]
struct Profile {
    hours: BTreeMap<i64, Hour>,
    ips: HashSet<String>,
    keys: HashSet<String>,
    hours_of_day: [u64; 24],
    window: Hour,
    window_ips: BTreeSet<String>,
    window_keys: BTreeMap<String, u64>,
    window_hours_of_day: BTreeSet<usize>,
    window_access_keys: BTreeSet<String>,
}

/// Absolute floors: below these, no volume is unusual however quiet the baseline.
const FLOORS: [(&str, f64); 6] = [
    ("requests", 200.0),
    ("bytes_read", 64.0 * 1024.0 * 1024.0),
    ("distinct_objects", 100.0),
    ("distinct_keys", 10.0),
    ("errors", 50.0),
    ("access_denied", 20.0),
];

fn hour_metrics(h: &Hour) -> [f64; 6] {
    [
        h.requests as f64,
        h.bytes as f64,
        h.objects.len() as f64,
        h.keys.len() as f64,
        h.errors as f64,
        h.denied as f64,
    ]
}

fn hour_of_day(t: i64) -> usize {
    (t.rem_euclid(86_400) / 3_600) as usize
}

/// Judges the window `[now - window, now)` of every principal against its baseline.
pub fn detect(events: impl IntoIterator<Item = Event>, now: i64, cfg: &Config) -> Vec<Alert> {
    let window_start = now - cfg.window;
    let baseline_start = window_start - cfg.baseline;
    let mut profiles: HashMap<String, Profile> = HashMap::new();
    for e in events {
        if e.time < baseline_start || e.time >= now {
            continue;
        }
        let p = profiles.entry(e.principal.clone()).or_default();
        let in_window = e.time >= window_start;
        let h = if in_window {
            &mut p.window
        } else {
            p.hours.entry(e.time.div_euclid(3_600)).or_default()
        };
        h.requests += 1;
        h.bytes += e.bytes_out;
        if e.error_code.is_some() {
            h.errors += 1;
        }
        if e.denied() {
            h.denied += 1;
        }
        h.objects.extend(e.objects.iter().cloned());
        h.keys.extend(e.keys.iter().cloned());
        if in_window {
            if let Some(ip) = &e.source_ip {
                p.window_ips.insert(ip.clone());
            }
            for k in &e.keys {
                *p.window_keys.entry(k.clone()).or_default() += 1;
            }
            p.window_hours_of_day.insert(hour_of_day(e.time));
            if let Some(k) = &e.access_key {
                p.window_access_keys.insert(k.clone());
            }
        } else {
            if let Some(ip) = &e.source_ip {
                p.ips.insert(ip.clone());
            }
            p.keys.extend(e.keys.iter().cloned());
            p.hours_of_day[hour_of_day(e.time)] += 1;
        }
    }
    let scale = 3_600.0 / cfg.window as f64;
    let mut alerts = Vec::new();
    let mut names: Vec<&String> = profiles.keys().collect();
    names.sort();
    for name in names {
        let p = &profiles[name];
        if p.window.requests == 0 || p.hours.len() < cfg.min_active_hours {
            continue;
        }
        let mut signals = Vec::new();
        // Volume: per hour, against the busiest baseline hour.
        let observed = hour_metrics(&p.window).map(|x| x * scale);
        for (i, (metric, floor)) in FLOORS.iter().enumerate() {
            let mut values: Vec<f64> = p.hours.values().map(|h| hour_metrics(h)[i]).collect();
            values.sort_by(f64::total_cmp);
            let busiest = values.last().copied().unwrap_or(0.0);
            let typical = values[values.len() / 2];
            let threshold = (busiest * cfg.factor).max(*floor);
            if observed[i] > threshold {
                signals.push(Signal {
                    signal: metric,
                    strong: true,
                    observed: observed[i],
                    typical,
                    threshold,
                    detail: format!(
                        "{metric} at {:.0} per hour; typical {typical:.0}, busiest baseline hour {busiest:.0}",
                        observed[i]
                    ),
                });
            }
        }
        // Keys it never used: weak for one, strong when it works through several.
        let new_keys: Vec<(&String, &u64)> = p
            .window_keys
            .iter()
            .filter(|(k, _)| !p.keys.contains(*k))
            .collect();
        if !new_keys.is_empty() {
            let uses: u64 = new_keys.iter().map(|(_, n)| **n).sum();
            signals.push(Signal {
                signal: "new_keys",
                strong: new_keys.len() >= 3,
                observed: new_keys.len() as f64,
                typical: p.keys.len() as f64,
                threshold: 0.0,
                detail: format!("{} key(s) never used before, {uses} use(s)", new_keys.len()),
            });
        }
        let new_ips: Vec<&String> = p
            .window_ips
            .iter()
            .filter(|ip| !p.ips.contains(*ip))
            .collect();
        if !new_ips.is_empty() && !p.ips.is_empty() {
            signals.push(Signal {
                signal: "new_source_ips",
                strong: false,
                observed: new_ips.len() as f64,
                typical: p.ips.len() as f64,
                threshold: 0.0,
                detail: format!("new source IP(s): {}", join(&new_ips)),
            });
        }
        let active_days = p
            .hours
            .keys()
            .map(|h| h.div_euclid(24))
            .collect::<BTreeSet<_>>();
        let odd_hours: Vec<usize> = p
            .window_hours_of_day
            .iter()
            .copied()
            .filter(|h| p.hours_of_day[*h] == 0)
            .collect();
        if !odd_hours.is_empty() && active_days.len() >= 7 {
            signals.push(Signal {
                signal: "unusual_hours",
                strong: false,
                observed: odd_hours.len() as f64,
                typical: p.hours_of_day.iter().filter(|&&n| n > 0).count() as f64,
                threshold: 0.0,
                detail: format!(
                    "active at {} UTC, never before in {} active days",
                    odd_hours
                        .iter()
                        .map(|h| format!("{h:02}:00"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    active_days.len()
                ),
            });
        }
        let strong = signals.iter().filter(|s| s.strong).count();
        let weak = signals.len() - strong;
        if strong == 0 && weak < 2 {
            continue;
        }
        let severity = if strong >= 2 || (strong >= 1 && weak >= 1) {
            crate::Severity::High
        } else {
            crate::Severity::Medium
        };
        alerts.push(Alert {
            principal: name.clone(),
            access_keys: p.window_access_keys.iter().cloned().collect(),
            window_start,
            window_end: now,
            severity,
            signals,
        });
    }
    alerts
}

fn join(items: &[&String]) -> String {
    items
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A simulated organisation, for tests and for `coffer bench`-style demonstrations: weeks of
/// ordinary traffic for many principals (daily rhythm, weekday/weekend differences, random
/// variation), in CloudTrail-shaped events.
pub mod sim {
    use super::Event;

    /// SplitMix64.
    #[derive(Debug)]
    pub struct Rng(u64);

    impl Rng {
        pub fn new(seed: u64) -> Self {
            Rng(seed)
        }
        pub fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        pub fn below(&mut self, n: u64) -> u64 {
            self.next_u64() % n.max(1)
        }
        /// Poisson-distributed count with mean `mean` (Knuth; small means).
        pub fn poisson(&mut self, mean: f64) -> u64 {
            if mean > 30.0 {
                // Normal approximation.
                let u1 = (self.below(1 << 30) as f64 + 1.0) / f64::from(1u32 << 30);
                let u2 = self.below(1 << 30) as f64 / f64::from(1u32 << 30);
                let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                return (mean + z * mean.sqrt()).max(0.0) as u64;
            }
            let l = (-mean).exp();
            let (mut k, mut p) = (0u64, 1.0);
            loop {
                p *= (self.below(1 << 30) as f64 + 0.5) / f64::from(1u32 << 30);
                if p <= l {
                    return k;
                }
                k += 1;
            }
        }
    }

    /// One principal's habits.
    #[derive(Debug, Clone)]
    pub struct Habit {
        pub principal: String,
        pub access_key: String,
        pub ip: String,
        /// Mean requests in a working hour.
        pub rate: f64,
        /// First and last working hour (UTC); some work around the clock.
        pub hours: (usize, usize),
        pub weekends: bool,
        pub objects: usize,
        pub keys: Vec<String>,
        /// Typical object size.
        pub object_bytes: u64,
    }

    pub fn habits(rng: &mut Rng, n: usize, account: &str) -> Vec<Habit> {
        (0..n)
            .map(|i| {
                let service = i % 5 == 0;
                Habit {
                    principal: format!("arn:aws:iam::{account}:user/user{i:03}"),
                    access_key: format!("AKIASIM{i:013}"),
                    ip: format!("10.{}.{}.{}", i / 250, i % 250, 10 + rng.below(200)),
                    rate: [2.0, 5.0, 10.0, 20.0, 40.0][rng.below(5) as usize],
                    hours: if service {
                        (0, 23)
                    } else {
                        let start = 6 + rng.below(4) as usize;
                        (start, start + 8 + rng.below(3) as usize)
                    },
                    weekends: service,
                    objects: 20 + rng.below(200) as usize,
                    keys: (0..1 + rng.below(3))
                        .map(|k| format!("arn:aws:kms:us-east-1:{account}:key/sim-{i}-{k}"))
                        .collect(),
                    object_bytes: 4096 + rng.below(64 * 1024),
                }
            })
            .collect()
    }

    /// Ordinary traffic of `habits` for the hours `[from, to)` (Unix hours).
    pub fn traffic(rng: &mut Rng, habits: &[Habit], from: i64, to: i64) -> Vec<Event> {
        let mut out = Vec::new();
        for hour in from..to {
            let day = hour.div_euclid(24);
            // 1970-01-01 was a Thursday: day 2 and 3 of each week are the weekend.
            let weekend = matches!(day.rem_euclid(7), 2 | 3);
            let hod = hour.rem_euclid(24) as usize;
            for h in habits {
                if (weekend && !h.weekends) || hod < h.hours.0 || hod > h.hours.1 {
                    continue;
                }
                // Busier mornings, random busy days.
                let mut mean = h.rate * if hod == h.hours.0 + 1 { 1.8 } else { 1.0 };
                if rng.below(10) == 0 {
                    mean *= 1.5;
                }
                for _ in 0..rng.poisson(mean) {
                    let at = hour * 3_600 + rng.below(3_600) as i64;
                    out.push(event(rng, h, at));
                }
            }
        }
        out
    }

    /// One ordinary request of `h` at `time`.
    pub fn event(rng: &mut Rng, h: &Habit, time: i64) -> Event {
        let decrypt = !h.keys.is_empty() && rng.below(4) == 0;
        Event {
            time,
            principal: h.principal.clone(),
            access_key: Some(h.access_key.clone()),
            source_ip: Some(h.ip.clone()),
            event_name: if decrypt { "Decrypt" } else { "GetObject" }.into(),
            error_code: (rng.below(200) == 0).then(|| "NoSuchKey".to_owned()),
            bytes_out: if decrypt { 0 } else { h.object_bytes },
            objects: if decrypt {
                vec![]
            } else {
                vec![format!(
                    "arn:aws:s3:::data/{}/obj{}",
                    h.principal.rsplit('/').next().unwrap_or(""),
                    rng.below(h.objects as u64)
                )]
            },
            keys: if decrypt {
                vec![h.keys[rng.below(h.keys.len() as u64) as usize].clone()]
            } else {
                vec![]
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sim::*;
    use super::*;

    const DAY_HOURS: i64 = 24;

    #[test]
    fn discovery_reads_are_not_the_principals() {
        let read = |agent: &str| {
            serde_json::json!({
                "eventTime": "2026-11-23T10:00:00Z", "eventName": "GetObject", "userAgent": agent,
                "userIdentity": { "arn": "arn:aws:iam::111122223333:user/a", "accessKeyId": "AKIA1" },
            })
        };
        assert!(Event::from_cloudtrail(&read("aws-cli/2.15")).is_some());
        assert!(Event::from_cloudtrail(&read("coffer-discovery/0.1.0 job/abc")).is_none());
    }

    /// A Wednesday, 2026-11-18T00:00Z, in hours.
    const START: i64 = 1_794_960_000 / 3_600;

    fn world(seed: u64, n: usize, weeks: i64) -> (Rng, Vec<Habit>, Vec<Event>, i64) {
        let mut rng = Rng::new(seed);
        let habits = habits(&mut rng, n, "111122223333");
        let end = START + weeks * 7 * DAY_HOURS;
        let events = traffic(&mut rng, &habits, START, end);
        (rng, habits, events, end)
    }

    #[test]
    fn ordinary_variation_raises_nothing() {
        for seed in 1..=3 {
            let (mut rng, habits, mut events, end) = world(seed, 50, 5);
            // Judge a dozen different windows, including a Monday morning and a night.
            for offset in [9, 10, 14, 22, 33, 58, 81, 105, 130, 150, 160, 167] {
                let now_hour = end - 7 * DAY_HOURS + offset;
                let alerts = detect(events.iter().cloned(), now_hour * 3_600, &Config::default());
                assert!(alerts.is_empty(), "seed {seed} hour {offset}: {alerts:#?}");
            }
            // The same holds with a fresh, ordinary final hour appended.
            events.extend(traffic(&mut rng, &habits, end, end + 1));
            assert!(detect(events, (end + 1) * 3_600, &Config::default()).is_empty());
        }
    }

    #[test]
    fn exactly_the_exfiltrating_principal_is_flagged() {
        let (mut rng, habits, mut events, end) = world(42, 60, 4);
        // Monday 10:00 UTC: ordinary traffic for everyone...
        let now_hour = end + 24 * 5 + 10;
        events.extend(traffic(&mut rng, &habits, end, now_hour));
        // ...and one principal that reads ~10 objects an hour reads 10,000.
        let thief = habits
            .iter()
            .find(|h| h.rate <= 10.0 && h.hours.0 <= 9 && h.hours.1 >= 9)
            .expect("a quiet daytime principal")
            .clone();
        for i in 0..10_000 {
            let mut e = event(&mut rng, &thief, (now_hour - 1) * 3_600 + (i % 3_600));
            e.event_name = "GetObject".into();
            e.keys.clear();
            e.objects = vec![format!("arn:aws:s3:::data/all/obj{i}")];
            e.bytes_out = 200_000;
            events.push(e);
        }
        let alerts = detect(events, now_hour * 3_600, &Config::default());
        assert_eq!(alerts.len(), 1, "{alerts:#?}");
        let a = &alerts[0];
        assert_eq!(a.principal, thief.principal);
        assert_eq!(a.access_keys, vec![thief.access_key.clone()]);
        assert_eq!(a.severity, crate::Severity::High);
        let kinds: Vec<&str> = a.signals.iter().map(|s| s.signal).collect();
        assert!(
            kinds.contains(&"requests")
                && kinds.contains(&"distinct_objects")
                && kinds.contains(&"bytes_read")
        );
    }

    #[test]
    fn decrypting_with_never_used_keys_from_a_new_address_is_flagged() {
        let (mut rng, habits, mut events, end) = world(7, 40, 4);
        let now_hour = end + 24 * 5 + 11;
        events.extend(traffic(&mut rng, &habits, end, now_hour));
        let insider = habits
            .iter()
            .find(|h| h.hours.0 <= 10 && h.hours.1 >= 10 && !h.keys.is_empty())
            .expect("a daytime principal with keys")
            .clone();
        // A handful of decrypts, well within its usual volume, but with five keys it never
        // used, from an address it never came from.
        for k in 0..5 {
            let mut e = event(&mut rng, &insider, (now_hour - 1) * 3_600 + k * 60);
            e.event_name = "Decrypt".into();
            e.objects.clear();
            e.keys = vec![format!(
                "arn:aws:kms:us-east-1:111122223333:key/other-team-{k}"
            )];
            e.source_ip = Some("203.0.113.77".into());
            events.push(e);
        }
        let alerts = detect(events, now_hour * 3_600, &Config::default());
        assert_eq!(alerts.len(), 1, "{alerts:#?}");
        assert_eq!(alerts[0].principal, insider.principal);
        let kinds: Vec<&str> = alerts[0].signals.iter().map(|s| s.signal).collect();
        assert!(
            kinds.contains(&"new_keys") && kinds.contains(&"new_source_ips"),
            "{kinds:?}"
        );
    }

    #[test]
    fn a_quiet_night_login_from_a_new_address_is_flagged_but_either_alone_is_not() {
        let (mut rng, habits, mut events, end) = world(3, 30, 4);
        let day = habits
            .iter()
            .find(|h| h.hours.0 >= 6 && h.hours.1 <= 19)
            .expect("an office-hours principal")
            .clone();
        // Monday 03:00-04:00 UTC, a handful of ordinary reads: unusual hour and new address.
        let now_hour = end + 24 * 5 + 4;
        events.extend(traffic(&mut rng, &habits, end, now_hour));
        let night = |rng: &mut Rng, ip: &str| {
            (0..3)
                .map(|k| {
                    let mut e = event(rng, &day, (now_hour - 1) * 3_600 + k * 300);
                    e.source_ip = Some(ip.to_owned());
                    e
                })
                .collect::<Vec<_>>()
        };
        let cfg = Config::default();
        let both: Vec<Event> = events
            .iter()
            .cloned()
            .chain(night(&mut rng, "198.51.100.9"))
            .collect();
        let alerts = detect(both, now_hour * 3_600, &cfg);
        assert_eq!(alerts.len(), 1, "{alerts:#?}");
        assert_eq!(alerts[0].principal, day.principal);
        assert_eq!(alerts[0].severity, crate::Severity::Medium);
        let kinds: Vec<&str> = alerts[0].signals.iter().map(|s| s.signal).collect();
        assert_eq!(kinds, ["new_source_ips", "unusual_hours"]);
        // The unusual hour alone (from its usual address) is one weak sign: no alert.
        let usual = day.ip.clone();
        let hour_only: Vec<Event> = events
            .iter()
            .cloned()
            .chain(night(&mut rng, &usual))
            .collect();
        assert!(detect(hour_only, now_hour * 3_600, &cfg).is_empty());
    }

    #[test]
    fn reads_cloudtrail_events() {
        let v: Value = serde_json::from_str(
            r#"{"eventTime":"2026-11-23T07:30:22Z","eventName":"GetObject","eventSource":"s3.amazonaws.com",
                "userIdentity":{"type":"IAMUser","arn":"arn:aws:iam::111122223333:user/a","accessKeyId":"AKIAX"},
                "sourceIPAddress":"10.0.0.1","additionalEventData":{"bytesTransferredOut":1234},
                "resources":[{"type":"AWS::S3::Object","ARN":"arn:aws:s3:::b/k"},{"type":"AWS::S3::Bucket","ARN":"arn:aws:s3:::b"}]}"#,
        )
        .expect("json");
        let e = Event::from_cloudtrail(&v).expect("event");
        assert_eq!(e.principal, "arn:aws:iam::111122223333:user/a");
        assert_eq!((e.bytes_out, e.objects.len(), e.keys.len()), (1234, 1, 0));
        assert_eq!(e.time, 1_795_419_022);
        assert!(Event::from_cloudtrail(&serde_json::json!({"start": {}})).is_none());
    }
}
