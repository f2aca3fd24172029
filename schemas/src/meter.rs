//! The figures of the meter kinds `max`, `latest` and `unique_count`
//! (docs/reference.md#other-meter-kinds).
//!
//! A [`MeterSummary`] is what a span of one tenant's events of one metric (an
//! hour, a day) keeps so that the figure of any union of spans is exact: the
//! largest value, the last event by `(ts, event_id)` with its value, and the
//! set of distinct values of the counted field. Summaries merge, so the hourly
//! rollups, the raw events of a partition and a month all go through
//! [`MeterSummary::add`] and [`MeterSummary::merge`] alone.
//!
//! [`attributed_by_day`] turns a month's daily summaries into the raw figure
//! per day that the invoice prices like a counter's daily sums: the whole
//! figure is placed on the day that determines it (the first day of the
//! largest value, the day of the last event, and each distinct value on the
//! first day it was seen), so the days add up to the month's figure and a rate
//! change inside the month prices each part at the rate of its day.

use std::collections::{BTreeMap, BTreeSet};

use bigdecimal::BigDecimal;
use chrono::NaiveDate;

use crate::config::MetricKind;

/// The last event of a span, by `ts` then `event_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastEvent {
    /// Its `ts`, UTC microseconds.
    pub ts_micros: i64,
    /// Its `event_id` (breaks ties of `ts`).
    pub event_id: String,
    /// Its `value`.
    pub value: BigDecimal,
}

impl LastEvent {
    /// Whether `self` comes after `other` by `(ts, event_id)`.
    fn is_after(&self, other: &LastEvent) -> bool {
        (self.ts_micros, self.event_id.as_str()) > (other.ts_micros, other.event_id.as_str())
    }
}

/// What a span of one tenant's events of one meter metric keeps; each kind
/// fills only its own part (a `max` metric its [`Self::max`], …).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeterSummary {
    /// `max`: the largest value.
    pub max: Option<BigDecimal>,
    /// `latest`: the last event.
    pub last: Option<LastEvent>,
    /// `unique_count`: the distinct values of the counted field (events
    /// without a value of it add nothing).
    pub distinct: BTreeSet<String>,
}

/// A `unique_count` span or month has more distinct values than its metric's
/// `max_distinct` allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooManyDistinct {
    /// The metric's bound.
    pub max_distinct: u64,
}

impl MeterSummary {
    /// Adds one event of a metric of `kind`: its `ts`, `event_id`, `value` and
    /// its value of the counted field (`unique_count` only).
    pub fn add(
        &mut self,
        kind: MetricKind,
        ts_micros: i64,
        event_id: &str,
        value: &BigDecimal,
        field: Option<&str>,
    ) {
        match kind {
            MetricKind::Max => {
                if self.max.as_ref().is_none_or(|max| value > max) {
                    self.max = Some(value.clone());
                }
            }
            MetricKind::Latest => {
                let later = self.last.as_ref().is_none_or(|last| {
                    (ts_micros, event_id) > (last.ts_micros, last.event_id.as_str())
                });
                if later {
                    self.last = Some(LastEvent {
                        ts_micros,
                        event_id: event_id.to_string(),
                        value: value.clone(),
                    });
                }
            }
            MetricKind::UniqueCount => {
                if let Some(field) = field
                    && !self.distinct.contains(field)
                {
                    self.distinct.insert(field.to_string());
                }
            }
            MetricKind::Counter | MetricKind::Gauge => {}
        }
    }

    /// Merges `other`, a summary of other events of the same metric.
    pub fn merge(&mut self, other: MeterSummary) {
        if let Some(max) = other.max
            && self.max.as_ref().is_none_or(|mine| max > *mine)
        {
            self.max = Some(max);
        }
        if let Some(last) = other.last
            && self.last.as_ref().is_none_or(|mine| last.is_after(mine))
        {
            self.last = Some(last);
        }
        // The smaller set is inserted into the larger one.
        let mut distinct = other.distinct;
        if self.distinct.len() < distinct.len() {
            std::mem::swap(&mut self.distinct, &mut distinct);
        }
        self.distinct.extend(distinct);
    }

    /// The figure of a metric of `kind` over the summarised events alone: the
    /// largest value, the last value, or the number of distinct values;
    /// `None` when they give none.
    pub fn figure(&self, kind: MetricKind) -> Option<BigDecimal> {
        match kind {
            MetricKind::Max => self.max.clone(),
            MetricKind::Latest => self.last.as_ref().map(|last| last.value.clone()),
            MetricKind::UniqueCount => {
                (!self.distinct.is_empty()).then(|| BigDecimal::from(self.distinct.len() as u64))
            }
            MetricKind::Counter | MetricKind::Gauge => None,
        }
    }

    /// Refuses the summary when it holds more distinct values than `max_distinct`.
    pub fn check_distinct(&self, max_distinct: u64) -> Result<(), TooManyDistinct> {
        if self.distinct.len() as u64 > max_distinct {
            return Err(TooManyDistinct { max_distinct });
        }
        Ok(())
    }
}

/// The raw figure of a metric of `kind` over the days of `days` (each day's
/// summary), placed on the day that determines it: a `max` on the first day
/// of its largest value, a `latest` on the day of its last event, and each
/// distinct value of a `unique_count` on the first day it was seen. Days with
/// nothing placed on them are left out; the values add up to the figure over
/// all of `days`. A `unique_count` with more than `max_distinct` values is
/// refused.
pub fn attributed_by_day(
    kind: MetricKind,
    days: &BTreeMap<NaiveDate, MeterSummary>,
    max_distinct: u64,
) -> Result<BTreeMap<NaiveDate, BigDecimal>, TooManyDistinct> {
    let mut placed = BTreeMap::new();
    match kind {
        MetricKind::Max => {
            let mut best: Option<(NaiveDate, &BigDecimal)> = None;
            for (day, summary) in days {
                if let Some(max) = &summary.max
                    && best.is_none_or(|(_, value)| max > value)
                {
                    best = Some((*day, max));
                }
            }
            placed.extend(best.map(|(day, value)| (day, value.clone())));
        }
        MetricKind::Latest => {
            let mut best: Option<(NaiveDate, &LastEvent)> = None;
            for (day, summary) in days {
                if let Some(last) = &summary.last
                    && best.is_none_or(|(_, found)| last.is_after(found))
                {
                    best = Some((*day, last));
                }
            }
            placed.extend(best.map(|(day, last)| (day, last.value.clone())));
        }
        MetricKind::UniqueCount => {
            let mut seen: BTreeSet<&str> = BTreeSet::new();
            for (day, summary) in days {
                let before = seen.len();
                seen.extend(summary.distinct.iter().map(String::as_str));
                if seen.len() as u64 > max_distinct {
                    return Err(TooManyDistinct { max_distinct });
                }
                if seen.len() > before {
                    placed.insert(*day, BigDecimal::from((seen.len() - before) as u64));
                }
            }
        }
        MetricKind::Counter | MetricKind::Gauge => {}
    }
    Ok(placed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> BigDecimal {
        text.parse().unwrap()
    }

    fn day(n: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 3, n).unwrap()
    }

    fn summary(kind: MetricKind, events: &[(i64, &str, &str, Option<&str>)]) -> MeterSummary {
        let mut summary = MeterSummary::default();
        for (ts, id, value, field) in events {
            summary.add(kind, *ts, id, &d(value), *field);
        }
        summary
    }

    #[test]
    fn max_is_placed_on_the_first_day_of_the_largest_value() {
        let kind = MetricKind::Max;
        let days = BTreeMap::from([
            (
                day(1),
                summary(kind, &[(1, "a", "3", None), (2, "b", "7", None)]),
            ),
            (day(2), summary(kind, &[(3, "c", "7.000", None)])),
            (day(4), summary(kind, &[(4, "d", "5", None)])),
        ]);
        let placed = attributed_by_day(kind, &days, 0).unwrap();
        assert_eq!(placed, BTreeMap::from([(day(1), d("7"))]));
    }

    #[test]
    fn latest_breaks_ties_of_ts_by_event_id() {
        let kind = MetricKind::Latest;
        // Two events at the same instant: "b" sorts after "a" and wins, in
        // whichever order they are added or merged.
        let mut first = summary(kind, &[(10, "b", "2", None)]);
        first.merge(summary(kind, &[(10, "a", "9", None), (5, "z", "1", None)]));
        let second = summary(kind, &[(10, "a", "9", None), (10, "b", "2", None)]);
        assert_eq!(first, second);
        let days = BTreeMap::from([
            (day(3), first),
            (day(2), summary(kind, &[(1, "x", "4", None)])),
        ]);
        assert_eq!(
            attributed_by_day(kind, &days, 0).unwrap(),
            BTreeMap::from([(day(3), d("2"))])
        );
    }

    #[test]
    fn unique_values_count_once_on_the_day_first_seen() {
        let kind = MetricKind::UniqueCount;
        let days = BTreeMap::from([
            (
                day(1),
                summary(
                    kind,
                    &[
                        (1, "a", "1", Some("u1")),
                        (2, "b", "1", Some("u2")),
                        (3, "c", "1", None),
                    ],
                ),
            ),
            (day(2), summary(kind, &[(4, "d", "1", Some("u2"))])),
            (
                day(5),
                summary(
                    kind,
                    &[(5, "e", "1", Some("u3")), (6, "f", "1", Some("u1"))],
                ),
            ),
        ]);
        assert_eq!(
            attributed_by_day(kind, &days, 3).unwrap(),
            BTreeMap::from([(day(1), d("2")), (day(5), d("1"))])
        );
        assert_eq!(
            attributed_by_day(kind, &days, 2),
            Err(TooManyDistinct { max_distinct: 2 })
        );
    }

    #[test]
    fn merging_is_the_same_as_adding_every_event_to_one_summary() {
        for kind in [MetricKind::Max, MetricKind::Latest, MetricKind::UniqueCount] {
            let events = [
                (5, "e1", "4", Some("x")),
                (9, "e2", "1", Some("y")),
                (9, "e0", "8", Some("x")),
                (2, "e3", "6", None),
            ];
            let whole = summary(kind, &events);
            let mut parts = summary(kind, &events[..1]);
            parts.merge(summary(kind, &events[1..3]));
            parts.merge(summary(kind, &events[3..]));
            assert_eq!(parts, whole, "{kind:?}");
            // A small set merged into a large one, and the other way round.
            let mut small = summary(kind, &events[3..]);
            small.merge(summary(kind, &events[..3]));
            assert_eq!(small, whole, "{kind:?}");
        }
    }
}
