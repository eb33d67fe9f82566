//! Source priority over time intervals, the way Apple Health counts a day's steps: where a higher-priority
//! source's samples cover an interval, lower-priority samples overlapping it count only for their uncovered
//! fraction. Used for additive quantities (steps, distance, energy, sleep minutes).
//!
//! Streaming: samples are collected in windows keyed by (lane, bucket) (a bucket is a local day, or an hour
//! for samples); a lane's windows close once a sample more than `lag` buckets newer arrives. This relies on
//! what Apple's exporter does: the Records of one type are written together, sorted by `startDate`. Memory
//! then holds about `lag + 1` days per lane, whatever the export's size. A sample for an already closed
//! window (input out of order by more than `lag`) cannot change what was emitted: it is dropped and counted
//! (`Stats::out_of_order`, reported with the import), so a stored day never regresses to a partial total.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::parse::SourceInfo;

/// The order sources win in: patterns matched, case-insensitively, against a source's name, its device's
/// name and model (`["watch", "iphone"]`: any Apple Watch first, then any iPhone, then everything else).
/// Sources matching the same pattern (or none) are ordered by name, so each source has its own rank.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceOrder(pub Vec<String>);

impl Default for SourceOrder {
    fn default() -> Self {
        Self(vec!["watch".to_owned(), "iphone".to_owned()])
    }
}

impl SourceOrder {
    fn tier(&self, s: &SourceInfo) -> usize {
        let fields = [Some(&s.name), s.device_name.as_ref(), s.model.as_ref()];
        self.0
            .iter()
            .position(|p| {
                let p = p.to_lowercase();
                fields.iter().flatten().any(|f| f.to_lowercase().contains(&p))
            })
            .unwrap_or(self.0.len())
    }

    /// The rank of every source (index = source id): lower wins.
    pub fn ranks(&self, sources: &[SourceInfo]) -> Vec<u32> {
        let mut order: Vec<(usize, &str, usize)> =
            sources.iter().enumerate().map(|(i, s)| (self.tier(s), s.name.as_str(), i)).collect();
        order.sort();
        let mut ranks = vec![0u32; sources.len()];
        for (rank, (_, _, id)) in order.into_iter().enumerate() {
            ranks[id] = rank as u32;
        }
        ranks
    }
}

/// One sample of an additive quantity: `[start, end)` in Unix seconds, its value, its source id.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Piece(pub i64, pub i64, pub f64, pub u32);

/// The merged total of one window's samples. Sources are taken in rank order; each sample counts for the
/// fraction of its interval not covered by higher-ranked sources' samples (an instant sample counts fully
/// unless it falls inside such coverage). Samples of one source never discount each other.
pub fn merged_total(pieces: &[Piece], ranks: &[u32]) -> f64 {
    let rank = |src: u32| ranks.get(src as usize).copied().unwrap_or(u32::MAX);
    let mut sorted: Vec<&Piece> = pieces.iter().collect();
    sorted.sort_by(|a, b| rank(a.3).cmp(&rank(b.3)).then(a.0.cmp(&b.0)).then(a.1.cmp(&b.1)));
    let mut covered: Vec<(i64, i64)> = Vec::new();
    let mut total = 0.0;
    let mut i = 0;
    while i < sorted.len() {
        let r = rank(sorted[i].3);
        let group_end = sorted[i..].iter().position(|p| rank(p.3) != r).map_or(sorted.len(), |n| i + n);
        let group = &sorted[i..group_end];
        for p in group {
            let Piece(s, e, v, _) = **p;
            if e > s {
                let overlap = overlap_with(&covered, s, e);
                total += v * ((e - s - overlap) as f64 / (e - s) as f64);
            } else if !covered.iter().any(|&(cs, ce)| cs <= s && s < ce) {
                total += v;
            }
        }
        covered = union(covered, group.iter().filter(|p| p.1 > p.0).map(|p| (p.0, p.1)));
        i = group_end;
    }
    total
}

/// Seconds of `[s, e)` inside the (sorted, disjoint) `covered` intervals.
fn overlap_with(covered: &[(i64, i64)], s: i64, e: i64) -> i64 {
    let from = covered.partition_point(|&(_, ce)| ce <= s);
    covered[from..].iter().take_while(|&&(cs, _)| cs < e).map(|&(cs, ce)| ce.min(e) - cs.max(s)).sum()
}

fn union(mut covered: Vec<(i64, i64)>, more: impl Iterator<Item = (i64, i64)>) -> Vec<(i64, i64)> {
    covered.extend(more);
    covered.sort_unstable();
    let mut out: Vec<(i64, i64)> = Vec::with_capacity(covered.len());
    for (s, e) in covered {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// Open windows of several lanes, closed in order as newer buckets arrive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(
    serialize = "L: Serialize, T: Serialize",
    deserialize = "L: Deserialize<'de> + Ord, T: Deserialize<'de>"
))]
pub struct Windows<L: Ord, T> {
    #[serde(with = "as_pairs")]
    open: BTreeMap<(L, i64), T>,
    /// Per lane: the newest bucket seen and the newest bucket closed.
    #[serde(with = "as_pairs")]
    lanes: BTreeMap<L, (i64, i64)>,
}

impl<L: Ord + Copy, T: Default> Default for Windows<L, T> {
    fn default() -> Self {
        Self { open: BTreeMap::new(), lanes: BTreeMap::new() }
    }
}

impl<L: Ord + Copy, T: Default> Windows<L, T> {
    /// The window of `(lane, bucket)`, or `None` when that window was already closed (out of order).
    pub fn at(&mut self, lane: L, bucket: i64) -> Option<&mut T> {
        let entry = self.lanes.entry(lane).or_insert((bucket, i64::MIN));
        if bucket <= entry.1 {
            return None;
        }
        entry.0 = entry.0.max(bucket);
        Some(self.open.entry((lane, bucket)).or_default())
    }

    /// Removes and returns the lane's windows older than its newest bucket minus `lag`, oldest first.
    pub fn ready(&mut self, lane: L, lag: i64) -> Vec<(i64, T)> {
        let Some(&(newest, closed)) = self.lanes.get(&lane) else { return Vec::new() };
        let through = newest - lag - 1;
        if through <= closed {
            return Vec::new();
        }
        let keys: Vec<(L, i64)> = self.open.range((lane, closed + 1)..=(lane, through)).map(|(k, _)| *k).collect();
        self.lanes.insert(lane, (newest, through));
        keys.into_iter().filter_map(|k| self.open.remove(&k).map(|t| (k.1, t))).collect()
    }

    /// Removes and returns every open window, in (lane, bucket) order.
    pub fn drain(&mut self) -> Vec<(L, i64, T)> {
        std::mem::take(&mut self.open).into_iter().map(|((l, b), t)| (l, b, t)).collect()
    }
}

/// Days as sorted, disjoint inclusive ranges: compact for the years of days one export spans.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaySet(Vec<(i32, i32)>);

impl DaySet {
    pub fn insert(&mut self, day: i32) {
        let i = self.0.partition_point(|&(_, e)| e < day);
        if let Some(&(s, _)) = self.0.get(i)
            && s <= day
        {
            return;
        }
        let joins_left = i > 0 && self.0[i - 1].1 + 1 == day;
        let joins_right = self.0.get(i).is_some_and(|&(s, _)| s == day + 1);
        match (joins_left, joins_right) {
            (true, true) => {
                self.0[i - 1].1 = self.0[i].1;
                self.0.remove(i);
            }
            (true, false) => self.0[i - 1].1 = day,
            (false, true) => self.0[i].0 = day,
            (false, false) => self.0.insert(i, (day, day)),
        }
    }

    pub fn contains(&self, day: i32) -> bool {
        let i = self.0.partition_point(|&(_, e)| e < day);
        self.0.get(i).is_some_and(|&(s, _)| s <= day)
    }

    pub fn len(&self) -> u64 {
        self.0.iter().map(|&(s, e)| (e - s + 1) as u64).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Serializes a map with tuple keys as a list of pairs (JSON keys must be strings).
mod as_pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(m: &BTreeMap<K, V>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.iter())
    }

    pub fn deserialize<'de, K: Deserialize<'de> + Ord, V: Deserialize<'de>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<K, V>, D::Error> {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WATCH: u32 = 0;
    const PHONE: u32 = 1;
    const RANKS: [u32; 2] = [0, 1];

    #[test]
    fn a_lower_priority_sample_counts_only_where_the_higher_one_does_not_cover() {
        // Watch 100 steps over [0, 600); iPhone 120 over [300, 900): half of it is covered.
        let pieces = [Piece(0, 600, 100.0, WATCH), Piece(300, 900, 120.0, PHONE)];
        assert_eq!(merged_total(&pieces, &RANKS), 160.0);
        // The naive sum would be 220; with the iPhone first it is 120 + half of the Watch's 100.
        assert_eq!(merged_total(&pieces, &[1, 0]), 170.0);
    }

    #[test]
    fn samples_of_one_source_never_discount_each_other() {
        let pieces = [Piece(0, 600, 10.0, PHONE), Piece(0, 600, 10.0, PHONE), Piece(1000, 1000, 5.0, PHONE)];
        assert_eq!(merged_total(&pieces, &RANKS), 25.0);
    }

    #[test]
    fn windows_close_once_the_lane_moves_past_the_lag_and_late_samples_are_refused() {
        let mut w: Windows<u8, Vec<i32>> = Windows::default();
        if let Some(v) = w.at(0, 10) {
            v.push(1);
        }
        if let Some(v) = w.at(0, 11) {
            v.push(2);
        }
        assert!(w.ready(0, 1).is_empty());
        if let Some(v) = w.at(0, 12) {
            v.push(3);
        }
        assert_eq!(w.ready(0, 1), vec![(10, vec![1])]);
        assert!(w.at(0, 10).is_none());
        assert!(w.at(0, 11).is_some());
        assert_eq!(w.drain().len(), 2);
    }

    #[test]
    fn a_day_set_keeps_ranges() {
        let mut d = DaySet::default();
        for day in [5, 7, 6, 1, 2, 9, 6] {
            d.insert(day);
        }
        assert_eq!(d.0, vec![(1, 2), (5, 7), (9, 9)]);
        assert_eq!(d.len(), 6);
        assert!(d.contains(6) && !d.contains(8));
    }
}
