//! The proofs: holdings are rebuilt from the events, then swept per disk.
//!
//! ```text
//! grant(c,d,m)@t0 ──► release(c,d,m)@t1 | kill(c)@tk | end of logs (∞)
//!      = holding [t0, t1)
//! per disk, sorted by t0: an exclusive holding may overlap nothing;
//! shared holdings may overlap each other only.
//! kill(c)@tk, c held d exclusively ──► first grant of d to anyone else
//!      at or after tk: free-time bound = grant − tk
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::log::{Event, Kind, Mode};

/// One rebuilt holding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    /// Who.
    pub client: String,
    /// What.
    pub disk: String,
    /// How.
    pub mode: Mode,
    /// Grant time.
    pub start: u64,
    /// Release or kill time; `u64::MAX` if never ended.
    pub end: u64,
    /// Ended by a kill of the client.
    pub killed: bool,
}

/// Two holdings of one disk that must not overlap but do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The earlier-granted holding.
    pub first: Holding,
    /// The later-granted one, granted before `first` ended.
    pub second: Holding,
}

/// How long a killed holder's exclusive lock stayed taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreeTime {
    /// The killed client.
    pub client: String,
    /// Its disk.
    pub disk: String,
    /// Nanoseconds from the kill to the next grant to someone else;
    /// `None` if nobody got the disk afterwards.
    pub ns: Option<u64>,
}

/// Everything the checker found.
#[derive(Debug, Clone, Default)]
pub struct Findings {
    /// All holdings.
    pub holdings: Vec<Holding>,
    /// Overlaps that break the lock rules.
    pub violations: Vec<Violation>,
    /// `error` lines, as `client: text`.
    pub errors: Vec<String>,
    /// Inconsistent logs (release without grant, kill of an unknown client).
    pub anomalies: Vec<String>,
    /// One entry per exclusive holding ended by a kill.
    pub free_times: Vec<FreeTime>,
}

type Open = HashMap<(String, String), VecDeque<(u64, Mode)>>;

/// Rebuilds the holdings from events of any order (they are sorted by time).
pub fn holdings(events: &[Event], anomalies: &mut Vec<String>) -> Vec<Holding> {
    let mut evs: Vec<&Event> = events.iter().collect();
    evs.sort_by_key(|e| e.t);
    let mut open: Open = HashMap::new();
    let mut out = Vec::new();
    for e in evs {
        match &e.kind {
            Kind::Grant { disk, mode } => open
                .entry((e.client.clone(), disk.clone()))
                .or_default()
                .push_back((e.t, *mode)),
            Kind::Release { disk, mode } => {
                close_one(&mut open, e, disk, *mode, &mut out, anomalies)
            }
            Kind::Kill { client } => close_all(&mut open, client, e.t, &mut out),
            Kind::Error { .. } => {}
        }
    }
    for ((client, disk), q) in open {
        for (start, mode) in q {
            out.push(holding(&client, &disk, mode, start, u64::MAX, false));
        }
    }
    out
}

fn holding(client: &str, disk: &str, mode: Mode, start: u64, end: u64, killed: bool) -> Holding {
    Holding {
        client: client.to_string(),
        disk: disk.to_string(),
        mode,
        start,
        end,
        killed,
    }
}

fn close_one(
    open: &mut Open,
    e: &Event,
    disk: &str,
    mode: Mode,
    out: &mut Vec<Holding>,
    anomalies: &mut Vec<String>,
) {
    let key = (e.client.clone(), disk.to_string());
    let q = open.entry(key).or_default();
    match q.iter().position(|(_, m)| *m == mode) {
        Some(i) => {
            if let Some((start, _)) = q.remove(i) {
                out.push(holding(&e.client, disk, mode, start, e.t, false));
            }
        }
        None => anomalies.push(format!(
            "{} released {disk} ({}) at {} without holding it",
            e.client,
            mode.letter(),
            e.t
        )),
    }
}

fn close_all(open: &mut Open, client: &str, t: u64, out: &mut Vec<Holding>) {
    for ((c, disk), q) in open.iter_mut() {
        if c != client {
            continue;
        }
        for (start, mode) in q.drain(..) {
            out.push(holding(c, disk, mode, start, t, true));
        }
    }
}

/// Pairs of conflicting holdings, disk by disk.
pub fn violations(holdings: &[Holding]) -> Vec<Violation> {
    let mut by_disk: BTreeMap<&str, Vec<&Holding>> = BTreeMap::new();
    for h in holdings {
        by_disk.entry(&h.disk).or_default().push(h);
    }
    let mut out = Vec::new();
    for list in by_disk.values_mut() {
        list.sort_by_key(|h| (h.start, h.end));
        let mut active: Vec<&Holding> = Vec::new();
        for h in list.iter() {
            active.retain(|a| a.end > h.start);
            for a in &active {
                if a.mode == Mode::Exclusive || h.mode == Mode::Exclusive {
                    out.push(Violation {
                        first: (*a).clone(),
                        second: (*h).clone(),
                    });
                }
            }
            active.push(h);
        }
    }
    out
}

/// For each exclusive holding ended by a kill: the time to the next grant
/// of that disk to another client.
pub fn free_times(holdings: &[Holding]) -> Vec<FreeTime> {
    let mut grants: HashMap<&str, Vec<(u64, &str)>> = HashMap::new();
    for h in holdings {
        grants
            .entry(&h.disk)
            .or_default()
            .push((h.start, &h.client));
    }
    for g in grants.values_mut() {
        g.sort_unstable();
    }
    let killed = holdings
        .iter()
        .filter(|h| h.killed && h.mode == Mode::Exclusive);
    killed
        .map(|h| {
            let next = grants.get(h.disk.as_str()).and_then(|g| {
                let from = g.partition_point(|(t, _)| *t < h.end);
                g.get(from..)?
                    .iter()
                    .find(|(_, c)| *c != h.client)
                    .map(|(t, _)| t - h.end)
            });
            FreeTime {
                client: h.client.clone(),
                disk: h.disk.clone(),
                ns: next,
            }
        })
        .collect()
}

/// Runs every check over `events`.
pub fn check(events: &[Event]) -> Findings {
    let mut anomalies = Vec::new();
    let errors = events
        .iter()
        .filter_map(|e| match &e.kind {
            Kind::Error { text } => Some(format!("{}: {text}", e.client)),
            _ => None,
        })
        .collect();
    let holdings = holdings(events, &mut anomalies);
    Findings {
        violations: violations(&holdings),
        free_times: free_times(&holdings),
        holdings,
        errors,
        anomalies,
    }
}
