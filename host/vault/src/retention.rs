//! Deciding which recovery points a retention policy keeps.
//!
//! This is pure logic over the times of one group of recovery points (the
//! caller groups them, typically by protected item): it records for every
//! point whether it is kept and which rules keep it, and performs no I/O.

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

/// Reason recorded for a point kept by [`RetentionPolicy::keep_last`].
const REASON_LAST: &str = "last";
/// Reason recorded for a point kept by [`RetentionPolicy::keep_within`].
const REASON_WITHIN: &str = "within";
/// Reason recorded for a point kept by [`RetentionPolicy::keep_tags`].
pub const REASON_TAG: &str = "tag";

/// Which recovery points to keep; a point is kept if any rule keeps it.
///
/// The calendar rules (`keep_hourly` to `keep_yearly`) each walk the points
/// from newest to oldest and keep a point whenever its calendar bucket (hour,
/// day, ISO 8601 week, month or year, in the time zone given to [`apply`])
/// differs from the bucket of the last point that rule kept, until the rule
/// has kept as many points as its count. The effect is to keep the newest
/// point of each of the most recent N buckets that contain a point; buckets
/// without points do not use up the count.
///
/// A count of zero keeps nothing, the same as `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPolicy {
    /// Keep the N newest points.
    pub keep_last: Option<u32>,
    /// Keep every point strictly less than this duration older than the
    /// newest point of the group (not the current time, so a group that
    /// stopped receiving backups is not emptied by this rule). A zero or
    /// negative duration keeps nothing.
    pub keep_within: Option<SignedDuration>,
    /// Keep the newest point of each of the N most recent hours with points.
    pub keep_hourly: Option<u32>,
    /// Keep the newest point of each of the N most recent days with points.
    pub keep_daily: Option<u32>,
    /// Keep the newest point of each of the N most recent ISO 8601 weeks
    /// (Monday to Sunday, numbered within the ISO week-numbering year) with
    /// points.
    pub keep_weekly: Option<u32>,
    /// Keep the newest point of each of the N most recent months with points.
    pub keep_monthly: Option<u32>,
    /// Keep the newest point of each of the N most recent years with points.
    pub keep_yearly: Option<u32>,
    /// Keep every point that carries one of these tags, whatever its time. [`apply`]
    /// sees only times: the caller, which knows the points' tags, asks
    /// [`RetentionPolicy::keeps_tagged`] (as `forget` does).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keep_tags: Vec<String>,
}

impl RetentionPolicy {
    /// Returns true if no rule of this policy can keep any point: every count
    /// is absent or zero, and `keep_within` is absent, zero or negative.
    ///
    /// Applying such a policy would forget every point, which is never what a
    /// configuration meant, so [`apply`] refuses it.
    pub fn is_empty(&self) -> bool {
        let counts = [
            self.keep_last,
            self.keep_hourly,
            self.keep_daily,
            self.keep_weekly,
            self.keep_monthly,
            self.keep_yearly,
        ];
        counts.iter().all(|count| count.unwrap_or(0) == 0)
            && self.keep_within.is_none_or(|within| !within.is_positive())
            && self.keep_tags.is_empty()
    }

    /// Whether [`RetentionPolicy::keep_tags`] keeps a point with these tags: it has one of
    /// them.
    pub fn keeps_tagged(&self, tags: &[String]) -> bool {
        tags.iter().any(|tag| self.keep_tags.contains(tag))
    }
}

/// The outcome of a retention policy for one recovery point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionDecision {
    /// Whether the point is kept; true exactly when `reasons` is not empty.
    pub keep: bool,
    /// The rules that keep the point, in the order `"last"`, `"within"`,
    /// `"hourly"`, `"daily"`, `"weekly"`, `"monthly"`, `"yearly"`; empty if
    /// the point is to be forgotten.
    pub reasons: Vec<&'static str>,
}

/// Errors from applying a retention policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetentionError {
    /// The policy has no rule that keeps anything (see
    /// [`RetentionPolicy::is_empty`]).
    #[error(
        "retention policy keeps nothing: it has no rule with a positive count or duration, \
         and no tag to keep, and applying it would forget every recovery point"
    )]
    EmptyPolicy,
}

/// The calendar unit of a bucket rule.
#[derive(Debug, Clone, Copy)]
enum Granularity {
    Hour,
    Day,
    IsoWeek,
    Month,
    Year,
}

impl Granularity {
    /// The bucket of a civil date-time. Fields that the unit ignores are zero,
    /// so two date-times share a bucket exactly when the key is equal.
    fn bucket(self, dt: DateTime) -> (i16, i8, i8, i8) {
        match self {
            Self::Hour => (dt.year(), dt.month(), dt.day(), dt.hour()),
            Self::Day => (dt.year(), dt.month(), dt.day(), 0),
            Self::IsoWeek => {
                // The ISO week-numbering year, not the calendar year: the
                // days of a week straddling New Year belong to one week.
                let week = dt.date().iso_week_date();
                (week.year(), week.week(), 0, 0)
            }
            Self::Month => (dt.year(), dt.month(), 0, 0),
            Self::Year => (dt.year(), 0, 0, 0),
        }
    }
}

/// Applies `policy` to one group of recovery points.
///
/// `times[i]` is the time of point i (any order). Returns one decision per input, same order.
///
/// Points are ranked by time, and points with equal times by their index in
/// `times`, a later index counting as newer, so the result is deterministic
/// whatever the input order. Calendar buckets are taken in `tz`.
///
/// Fails with [`RetentionError::EmptyPolicy`] if the policy cannot keep any
/// point, even when `times` is empty, so a misconfiguration surfaces before
/// the first point exists.
pub fn apply(
    policy: &RetentionPolicy,
    times: &[Timestamp],
    tz: &TimeZone,
) -> Result<Vec<RetentionDecision>, RetentionError> {
    if policy.is_empty() {
        return Err(RetentionError::EmptyPolicy);
    }
    let mut reasons: Vec<Vec<&'static str>> = vec![Vec::new(); times.len()];

    // Newest first: the reverse of ascending (time, index).
    let mut order: Vec<usize> = (0..times.len()).collect();
    order.sort_unstable_by(|&a, &b| (times[b], b).cmp(&(times[a], a)));

    if let Some(&newest) = order.first() {
        if let Some(count) = policy.keep_last {
            for &i in order.iter().take(to_usize(count)) {
                reasons[i].push(REASON_LAST);
            }
        }

        if let Some(within) = policy.keep_within {
            let latest = times[newest];
            // Points are sorted newest first, so the ages only grow.
            for &i in &order {
                // The difference of two timestamps always fits a
                // SignedDuration, so this cannot overflow.
                if latest.duration_since(times[i]) >= within {
                    break;
                }
                reasons[i].push(REASON_WITHIN);
            }
        }

        let rules = [
            (policy.keep_hourly, Granularity::Hour, "hourly"),
            (policy.keep_daily, Granularity::Day, "daily"),
            (policy.keep_weekly, Granularity::IsoWeek, "weekly"),
            (policy.keep_monthly, Granularity::Month, "monthly"),
            (policy.keep_yearly, Granularity::Year, "yearly"),
        ];
        if rules.iter().any(|(count, ..)| count.is_some_and(|n| n > 0)) {
            // Converting to civil time consults the zone's transitions, so
            // do it once per point rather than once per point and rule.
            let civil: Vec<DateTime> = order.iter().map(|&i| tz.to_datetime(times[i])).collect();
            for (count, granularity, reason) in rules {
                let Some(count) = count.map(to_usize) else {
                    continue;
                };
                keep_per_bucket(&order, &civil, count, granularity, |i| {
                    reasons[i].push(reason);
                });
            }
        }
    }

    Ok(reasons
        .into_iter()
        .map(|reasons| RetentionDecision {
            keep: !reasons.is_empty(),
            reasons,
        })
        .collect())
}

/// Walks the points newest first (`order`, with `civil[k]` the civil time of
/// `order[k]`) and calls `keep` for each point whose bucket differs from that
/// of the previous point kept, until `count` points are kept.
///
/// Comparing with the last kept bucket, rather than collecting distinct
/// buckets, differs only where a zone's clock goes back across a bucket
/// boundary: the repeated bucket then counts, and keeps a point, twice.
fn keep_per_bucket(
    order: &[usize],
    civil: &[DateTime],
    count: usize,
    granularity: Granularity,
    mut keep: impl FnMut(usize),
) {
    let mut kept = 0;
    let mut last_bucket = None;
    for (&i, &dt) in order.iter().zip(civil) {
        if kept == count {
            break;
        }
        let bucket = granularity.bucket(dt);
        if last_bucket != Some(bucket) {
            keep(i);
            last_bucket = Some(bucket);
            kept += 1;
        }
    }
}

/// Converts a rule's count to `usize`, saturating on targets where it does
/// not fit (a count that large keeps everything either way).
fn to_usize(count: u32) -> usize {
    usize::try_from(count).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("valid timestamp literal")
    }

    fn kept_indices(decisions: &[RetentionDecision]) -> Vec<usize> {
        decisions
            .iter()
            .enumerate()
            .filter_map(|(i, d)| d.keep.then_some(i))
            .collect()
    }

    fn run(policy: &RetentionPolicy, times: &[Timestamp]) -> Vec<RetentionDecision> {
        apply(policy, times, &TimeZone::UTC).expect("non-empty policy")
    }

    #[test]
    fn empty_policy_is_an_error() {
        let times = [ts("2024-01-01T00:00:00Z")];
        let empty = RetentionPolicy::default();
        assert!(empty.is_empty());
        assert_eq!(
            apply(&empty, &times, &TimeZone::UTC),
            Err(RetentionError::EmptyPolicy)
        );
        assert_eq!(
            apply(&empty, &[], &TimeZone::UTC),
            Err(RetentionError::EmptyPolicy)
        );
        // Rules that cannot keep anything do not make a policy non-empty.
        let useless = RetentionPolicy {
            keep_last: Some(0),
            keep_within: Some(SignedDuration::from_secs(-3600)),
            keep_hourly: Some(0),
            keep_daily: Some(0),
            keep_weekly: Some(0),
            keep_monthly: Some(0),
            keep_yearly: Some(0),
            keep_tags: Vec::new(),
        };
        assert!(useless.is_empty());
        // A tag to keep is a rule.
        let tagged = RetentionPolicy {
            keep_tags: vec!["release".into()],
            ..useless.clone()
        };
        assert!(!tagged.is_empty());
        assert!(tagged.keeps_tagged(&["nightly".into(), "release".into()]));
        assert!(!tagged.keeps_tagged(&["nightly".into()]));
        assert!(!tagged.keeps_tagged(&[]));
        let decisions = apply(&tagged, &times, &TimeZone::UTC).unwrap();
        assert!(decisions.iter().all(|d| !d.keep), "apply sees no tags");
        assert_eq!(
            apply(&useless, &times, &TimeZone::UTC),
            Err(RetentionError::EmptyPolicy)
        );
        let zero_within = RetentionPolicy {
            keep_within: Some(SignedDuration::ZERO),
            ..RetentionPolicy::default()
        };
        assert!(zero_within.is_empty());
        let one_rule = RetentionPolicy {
            keep_yearly: Some(1),
            ..RetentionPolicy::default()
        };
        assert!(!one_rule.is_empty());
    }

    #[test]
    fn no_points_gives_no_decisions() {
        let policy = RetentionPolicy {
            keep_last: Some(3),
            ..RetentionPolicy::default()
        };
        assert_eq!(run(&policy, &[]), []);
    }

    #[test]
    fn keep_last_keeps_newest_regardless_of_input_order() {
        let times = [
            ts("2024-05-03T00:00:00Z"),
            ts("2024-05-01T00:00:00Z"),
            ts("2024-05-05T00:00:00Z"),
            ts("2024-05-02T00:00:00Z"),
            ts("2024-05-04T00:00:00Z"),
        ];
        let policy = RetentionPolicy {
            keep_last: Some(3),
            ..RetentionPolicy::default()
        };
        let decisions = run(&policy, &times);
        assert_eq!(kept_indices(&decisions), [0, 2, 4]);
        assert_eq!(decisions[2].reasons, ["last"]);
        assert!(decisions[1].reasons.is_empty());

        let more_than_points = RetentionPolicy {
            keep_last: Some(100),
            ..RetentionPolicy::default()
        };
        assert_eq!(kept_indices(&run(&more_than_points, &times)).len(), 5);
    }

    #[test]
    fn equal_times_rank_later_index_as_newer() {
        let t = ts("2024-05-01T12:00:00Z");
        let times = [t, t, t];
        let last = RetentionPolicy {
            keep_last: Some(1),
            ..RetentionPolicy::default()
        };
        assert_eq!(kept_indices(&run(&last, &times)), [2]);
        let daily = RetentionPolicy {
            keep_daily: Some(5),
            ..RetentionPolicy::default()
        };
        assert_eq!(kept_indices(&run(&daily, &times)), [2]);
    }

    #[test]
    fn daily_keeps_newest_point_of_each_recent_day() {
        let times = [
            ts("2024-03-01T08:00:00Z"),
            ts("2024-03-01T20:00:00Z"), // newest of March 1
            ts("2024-03-02T01:00:00Z"),
            ts("2024-03-02T23:59:59Z"), // newest of March 2
            ts("2024-03-02T12:00:00Z"),
            ts("2024-03-04T06:00:00Z"), // only point of March 4
            ts("2024-02-28T06:00:00Z"), // beyond the three most recent days
        ];
        let policy = RetentionPolicy {
            keep_daily: Some(3),
            ..RetentionPolicy::default()
        };
        let decisions = run(&policy, &times);
        assert_eq!(kept_indices(&decisions), [1, 3, 5]);
        assert_eq!(decisions[5].reasons, ["daily"]);
    }

    #[test]
    fn buckets_follow_the_given_time_zone() {
        // 03:00 UTC on March 10 is still March 9 in New York.
        let times = [ts("2024-03-09T20:00:00Z"), ts("2024-03-10T03:00:00Z")];
        let policy = RetentionPolicy {
            keep_daily: Some(10),
            ..RetentionPolicy::default()
        };
        assert_eq!(kept_indices(&run(&policy, &times)), [0, 1]);
        let new_york = TimeZone::posix("EST5EDT,M3.2.0,M11.1.0").expect("valid POSIX zone");
        let decisions = apply(&policy, &times, &new_york).expect("non-empty policy");
        assert_eq!(kept_indices(&decisions), [1]);
    }

    #[test]
    fn hourly_treats_a_repeated_local_hour_as_one_bucket() {
        // On 2024-11-03 New York's clocks fell back from 02:00 EDT to 01:00
        // EST, so 05:30Z and 06:30Z are both 01:30 local time.
        let new_york = TimeZone::posix("EST5EDT,M3.2.0,M11.1.0").expect("valid POSIX zone");
        let times = [
            ts("2024-11-03T04:30:00Z"), // 00:30 EDT
            ts("2024-11-03T05:30:00Z"), // 01:30 EDT
            ts("2024-11-03T06:30:00Z"), // 01:30 EST
            ts("2024-11-03T07:30:00Z"), // 02:30 EST
        ];
        let policy = RetentionPolicy {
            keep_hourly: Some(10),
            ..RetentionPolicy::default()
        };
        let decisions = apply(&policy, &times, &new_york).expect("non-empty policy");
        assert_eq!(kept_indices(&decisions), [0, 2, 3]);
        assert_eq!(kept_indices(&run(&policy, &times)), [0, 1, 2, 3]);
    }

    #[test]
    fn weekly_uses_iso_weeks_across_new_year() {
        let times = [
            ts("2024-12-28T10:00:00Z"), // Saturday, 2024-W52
            ts("2024-12-30T10:00:00Z"), // Monday, 2025-W01
            ts("2025-01-02T10:00:00Z"), // Thursday, 2025-W01
            ts("2025-01-05T10:00:00Z"), // Sunday, 2025-W01 (newest of it)
            ts("2025-01-06T10:00:00Z"), // Monday, 2025-W02
        ];
        let policy = RetentionPolicy {
            keep_weekly: Some(10),
            ..RetentionPolicy::default()
        };
        assert_eq!(kept_indices(&run(&policy, &times)), [0, 3, 4]);
        let two_weeks = RetentionPolicy {
            keep_weekly: Some(2),
            ..RetentionPolicy::default()
        };
        assert_eq!(kept_indices(&run(&two_weeks, &times)), [3, 4]);
    }

    #[test]
    fn weekly_merges_the_last_days_of_a_year_into_the_next_iso_year() {
        // 2026-01-01 is a Thursday, so 2025-12-29..31 are in 2026-W01.
        let times = [ts("2025-12-29T00:00:00Z"), ts("2026-01-04T00:00:00Z")];
        let policy = RetentionPolicy {
            keep_weekly: Some(5),
            ..RetentionPolicy::default()
        };
        assert_eq!(kept_indices(&run(&policy, &times)), [1]);
    }

    #[test]
    fn monthly_and_yearly() {
        let times = [
            ts("2022-06-15T00:00:00Z"),
            ts("2022-12-31T23:00:00Z"), // newest of 2022
            ts("2023-01-10T00:00:00Z"),
            ts("2023-01-20T00:00:00Z"), // newest of 2023-01
            ts("2023-02-05T00:00:00Z"),
            ts("2023-02-25T00:00:00Z"), // newest of 2023-02 and of 2023
        ];
        let monthly = RetentionPolicy {
            keep_monthly: Some(3),
            ..RetentionPolicy::default()
        };
        assert_eq!(kept_indices(&run(&monthly, &times)), [1, 3, 5]);
        let yearly = RetentionPolicy {
            keep_yearly: Some(5),
            ..RetentionPolicy::default()
        };
        assert_eq!(kept_indices(&run(&yearly, &times)), [1, 5]);
        let one_year = RetentionPolicy {
            keep_yearly: Some(1),
            ..RetentionPolicy::default()
        };
        assert_eq!(kept_indices(&run(&one_year, &times)), [5]);
    }

    #[test]
    fn within_is_relative_to_the_newest_point_and_exclusive() {
        let times = [
            ts("2019-07-01T12:00:00Z"), // newest
            ts("2019-07-01T11:00:00Z"), // 1 h older
            ts("2019-06-30T12:00:01Z"), // 23:59:59 older
            ts("2019-06-30T12:00:00Z"), // exactly 24 h older
            ts("2019-06-30T11:00:00Z"), // 25 h older
        ];
        let policy = RetentionPolicy {
            keep_within: Some(SignedDuration::from_hours(24)),
            ..RetentionPolicy::default()
        };
        let decisions = run(&policy, &times);
        assert_eq!(kept_indices(&decisions), [0, 1, 2]);
        assert_eq!(decisions[0].reasons, ["within"]);
    }

    #[test]
    fn rules_combine_as_a_union_and_record_every_reason() {
        let times = [
            ts("2024-01-01T10:00:00Z"),
            ts("2024-01-02T10:00:00Z"),
            ts("2024-01-02T11:00:00Z"),
            ts("2024-01-02T12:00:00Z"),
            ts("2023-06-01T00:00:00Z"),
        ];
        let policy = RetentionPolicy {
            keep_last: Some(2),
            keep_within: Some(SignedDuration::from_mins(90)),
            keep_daily: Some(2),
            keep_yearly: Some(2),
            ..RetentionPolicy::default()
        };
        let decisions = run(&policy, &times);
        assert_eq!(decisions[3].reasons, ["last", "within", "daily", "yearly"]);
        assert_eq!(decisions[2].reasons, ["last", "within"]);
        assert_eq!(decisions[1].reasons, Vec::<&str>::new());
        assert!(!decisions[1].keep);
        assert_eq!(decisions[0].reasons, ["daily"]);
        assert_eq!(decisions[4].reasons, ["yearly"]);
    }

    fn policy_strategy() -> impl Strategy<Value = RetentionPolicy> {
        let count = || proptest::option::of(0u32..12);
        (
            count(),
            proptest::option::of(-10i64..400_000).prop_map(|s| s.map(SignedDuration::from_secs)),
            (count(), count(), count(), count(), count()),
        )
            .prop_map(
                |(keep_last, keep_within, (hourly, daily, weekly, monthly, yearly))| {
                    RetentionPolicy {
                        keep_last,
                        keep_within,
                        keep_hourly: hourly,
                        keep_daily: daily,
                        keep_weekly: weekly,
                        keep_monthly: monthly,
                        keep_yearly: yearly,
                        keep_tags: Vec::new(),
                    }
                },
            )
    }

    fn times_strategy() -> impl Strategy<Value = Vec<Timestamp>> {
        // Either spread over about three years or packed into three days, so
        // that both coarse and fine buckets get shared by several points.
        let span = prop_oneof![Just(100_000_000i64), Just(250_000i64)];
        span.prop_flat_map(|span| proptest::collection::vec(0..span, 0..60))
            .prop_map(|offsets| {
                offsets
                    .into_iter()
                    .map(|s| Timestamp::from_second(1_600_000_000 + s).expect("in range"))
                    .collect()
            })
    }

    proptest! {
        #[test]
        fn rule_counts_are_bounded(policy in policy_strategy(), times in times_strategy()) {
            let Ok(decisions) = apply(&policy, &times, &TimeZone::UTC) else {
                prop_assert!(policy.is_empty());
                return Ok(());
            };
            prop_assert!(!policy.is_empty());
            prop_assert_eq!(decisions.len(), times.len());
            let count = |reason: &str| decisions.iter().filter(|d| d.reasons.contains(&reason)).count();
            for d in &decisions {
                prop_assert_eq!(d.keep, !d.reasons.is_empty());
            }
            if let Some(n) = policy.keep_last {
                prop_assert_eq!(count("last"), (n as usize).min(times.len()));
            }
            let rules = [
                (policy.keep_hourly, Granularity::Hour, "hourly"),
                (policy.keep_daily, Granularity::Day, "daily"),
                (policy.keep_weekly, Granularity::IsoWeek, "weekly"),
                (policy.keep_monthly, Granularity::Month, "monthly"),
                (policy.keep_yearly, Granularity::Year, "yearly"),
            ];
            for (n, granularity, reason) in rules {
                // In UTC buckets never repeat, so a rule keeps one point per
                // distinct bucket, up to its count.
                let buckets: HashSet<_> = times
                    .iter()
                    .map(|&t| granularity.bucket(TimeZone::UTC.to_datetime(t)))
                    .collect();
                let expected = n.map_or(0, |n| (n as usize).min(buckets.len()));
                prop_assert_eq!(count(reason), expected, "rule {}", reason);
            }
            if let (Some(within), Some(&latest)) = (policy.keep_within, times.iter().max()) {
                let expected = times.iter().filter(|&&t| latest.duration_since(t) < within).count();
                prop_assert_eq!(count("within"), expected);
            }
        }

        #[test]
        fn decisions_follow_points_when_input_is_reordered(
            policy in policy_strategy(),
            times in times_strategy(),
        ) {
            prop_assume!(!policy.is_empty());
            // Equal times are ranked by index, so only distinct times may be
            // reordered freely.
            let mut distinct = times;
            distinct.sort();
            distinct.dedup();
            let forward = apply(&policy, &distinct, &TimeZone::UTC).expect("non-empty policy");
            let mut reversed_times = distinct.clone();
            reversed_times.reverse();
            let mut reversed = apply(&policy, &reversed_times, &TimeZone::UTC).expect("non-empty policy");
            reversed.reverse();
            prop_assert_eq!(forward, reversed);
        }
    }
}
