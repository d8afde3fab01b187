//! Which snapshots a `forget` keeps: restic's `--keep-last`, `--keep-daily`,
//! `--keep-weekly` and `--keep-monthly`, as plain functions without I/O.
//!
//! The snapshots are sorted newest first and walked once. Each rule is a
//! bucket with a count: a snapshot opens a new bucket period (its day, its
//! week...) when that period differs from the one of the last snapshot the
//! rule kept; the rule keeps it while its count lasts. So `keep_daily: 7`
//! keeps the newest snapshot of each of the 7 most recent days that have
//! snapshots (days without snapshots do not count), and `keep_last: 3` keeps
//! the 3 newest snapshots.
//!
//! As in restic, a rule whose count is not used up when the walk reaches the
//! oldest snapshot keeps that one too (reason "oldest daily snapshot"...):
//! with fewer days of history than `keep_daily`, the whole history length
//! is kept rather than only its newest days.
//!
//! Periods are in UTC: the day is "YYYY-MM-DD", the week the ISO 8601 week
//! (weeks start on Monday; the week belongs to the year of its Thursday),
//! the month "YYYY-MM".
//!
//! A policy of all zeros keeps nothing. restic keeps everything then;
//! callers must refuse an empty policy ([`Policy::is_empty`]) rather than
//! pass it here.

/// How many snapshots of each kind to keep; 0 turns the rule off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// The newest N snapshots.
    pub keep_last: u32,
    /// The newest snapshot of each of the N most recent days with snapshots.
    pub keep_daily: u32,
    /// The newest snapshot of each of the N most recent ISO weeks with snapshots.
    pub keep_weekly: u32,
    /// The newest snapshot of each of the N most recent months with snapshots.
    pub keep_monthly: u32,
}

impl Policy {
    /// Whether every count is 0: such a policy would remove every snapshot,
    /// and callers refuse it.
    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }
}

/// One snapshot as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotTime {
    /// The snapshot's id (only carried through to the decision).
    pub id: String,
    /// When it was taken, milliseconds since the Unix epoch.
    pub unix_ms: i64,
}

/// What the policy does with one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The snapshot's id.
    pub id: String,
    /// Kept (true) or to be removed.
    pub keep: bool,
    /// Every rule that keeps it, in the order last, daily, weekly, monthly:
    /// "last snapshot", "daily snapshot", "weekly snapshot", "monthly
    /// snapshot", or "oldest daily snapshot"... for the oldest snapshot
    /// kept by a rule whose count was not used up. Empty when removed.
    pub reasons: Vec<String>,
}

/// The decision for every snapshot, newest first. Snapshots taken at the
/// same millisecond are ordered by id (greater id first), so the result
/// does not depend on the input order.
pub fn apply(policy: &Policy, snapshots: &[SnapshotTime]) -> Vec<Decision> {
    let mut list: Vec<&SnapshotTime> = snapshots.iter().collect();
    list.sort_by(|a, b| b.unix_ms.cmp(&a.unix_ms).then_with(|| b.id.cmp(&a.id)));

    struct Bucket {
        count: u32,
        period: fn(i64, usize) -> i64,
        last: Option<i64>,
        reason: &'static str,
    }
    let mut buckets = [
        Bucket {
            count: policy.keep_last,
            period: |_, nr| nr as i64,
            last: None,
            reason: "last",
        },
        Bucket {
            count: policy.keep_daily,
            period: |ms, _| day_of(ms),
            last: None,
            reason: "daily",
        },
        Bucket {
            count: policy.keep_weekly,
            period: |ms, _| iso_week_of(ms),
            last: None,
            reason: "weekly",
        },
        Bucket {
            count: policy.keep_monthly,
            period: |ms, _| month_of(ms),
            last: None,
            reason: "monthly",
        },
    ];

    let oldest = list.len().saturating_sub(1);
    list.iter()
        .enumerate()
        .map(|(nr, snapshot)| {
            let mut reasons = Vec::new();
            for bucket in buckets.iter_mut().filter(|b| b.count > 0) {
                let period = (bucket.period)(snapshot.unix_ms, nr);
                if bucket.last != Some(period) {
                    reasons.push(format!("{} snapshot", bucket.reason));
                } else if nr == oldest {
                    reasons.push(format!("oldest {} snapshot", bucket.reason));
                } else {
                    continue;
                }
                bucket.last = Some(period);
                bucket.count -= 1;
            }
            Decision {
                id: snapshot.id.clone(),
                keep: !reasons.is_empty(),
                reasons,
            }
        })
        .collect()
}

/// Milliseconds in a day.
const DAY_MS: i64 = 86_400_000;

/// Days since 1970-01-01 (UTC) of the instant `unix_ms`.
fn day_of(unix_ms: i64) -> i64 {
    unix_ms.div_euclid(DAY_MS)
}

/// A number naming the month of `unix_ms` (UTC): year * 12 + month - 1.
fn month_of(unix_ms: i64) -> i64 {
    let (year, month, _) = civil_from_days(day_of(unix_ms));
    year * 12 + i64::from(month) - 1
}

/// A number naming the ISO 8601 week of `unix_ms` (UTC): iso_year * 100 + week.
fn iso_week_of(unix_ms: i64) -> i64 {
    let (year, week) = iso_week(day_of(unix_ms));
    year * 100 + i64::from(week)
}

/// The ISO 8601 (year, week) of the day `days` since 1970-01-01.
fn iso_week(days: i64) -> (i64, u32) {
    // 1970-01-01 was a Thursday: Monday is 0.
    let weekday = (days + 3).rem_euclid(7);
    let thursday = days - weekday + 3;
    let (year, _, _) = civil_from_days(thursday);
    let ordinal = thursday - days_from_civil(year, 1, 1);
    (year, (ordinal / 7 + 1) as u32)
}

/// The (year, month 1-12, day 1-31) of the day `days` since 1970-01-01, in
/// the proleptic Gregorian calendar (Howard Hinnant's civil_from_days).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March first
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the inverse of
/// [`civil_from_days`]).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let month = i64::from(month);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Milliseconds of a UTC date and time.
    fn at(year: i64, month: u32, day: u32, hour: i64, minute: i64) -> i64 {
        days_from_civil(year, month, day) * DAY_MS + (hour * 60 + minute) * 60_000
    }

    fn snapshot(id: &str, unix_ms: i64) -> SnapshotTime {
        SnapshotTime {
            id: id.into(),
            unix_ms,
        }
    }

    #[test]
    fn calendar_conversions_match_known_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        for days in [-800_000, -1, 0, 59, 10_957, 19_000, 20_000, 2_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        // 2024-03-15 12:00 UTC.
        assert_eq!(day_of(1_710_504_000_000), days_from_civil(2024, 3, 15));
        // Before the epoch, a day still starts at midnight.
        assert_eq!(day_of(-1), -1);
    }

    #[test]
    fn iso_weeks_follow_the_thursday_rule() {
        let week = |y, m, d| iso_week(days_from_civil(y, m, d));
        assert_eq!(week(2021, 1, 3), (2020, 53)); // a Sunday
        assert_eq!(week(2021, 1, 4), (2021, 1)); // a Monday
        assert_eq!(week(2024, 12, 30), (2025, 1)); // Monday of 2025's first week
        assert_eq!(week(2026, 1, 1), (2026, 1)); // a Thursday
        assert_eq!(week(2027, 1, 1), (2026, 53)); // a Friday
        assert_eq!(week(2024, 3, 17), (2024, 11)); // Sunday
        assert_eq!(week(2024, 3, 18), (2024, 12)); // Monday
        assert_eq!(week(1970, 1, 1), (1970, 1));
    }

    /// A golden table: 13 snapshots over two months and a half, kept by
    /// `keep_last 2, keep_daily 4, keep_weekly 3, keep_monthly 3`.
    #[test]
    fn golden_table() {
        let snapshots = vec![
            // Given out of order on purpose.
            snapshot("m", at(2024, 1, 10, 9, 0)), // Wed, week 2, Jan
            snapshot("a", at(2024, 3, 20, 18, 0)), // Wed, week 12, Mar
            snapshot("b", at(2024, 3, 20, 9, 0)), // same day, earlier
            snapshot("c", at(2024, 3, 19, 23, 59)), // Tue, week 12
            snapshot("d", at(2024, 3, 19, 0, 0)), // Tue, earlier
            snapshot("e", at(2024, 3, 18, 0, 0)), // Mon, week 12
            snapshot("f", at(2024, 3, 17, 23, 59)), // Sun, week 11
            snapshot("g", at(2024, 3, 16, 12, 0)), // Sat, week 11
            snapshot("h", at(2024, 3, 4, 12, 0)), // Mon, week 10
            snapshot("i", at(2024, 2, 29, 12, 0)), // Thu, week 9, Feb
            snapshot("j", at(2024, 2, 28, 12, 0)), // Wed, week 9, Feb
            snapshot("k", at(2024, 2, 1, 12, 0)), // Thu, week 5, Feb
            snapshot("l", at(2024, 1, 31, 12, 0)), // Wed, week 5, Jan
        ];
        let policy = Policy {
            keep_last: 2,
            keep_daily: 4,
            keep_weekly: 3,
            keep_monthly: 3,
        };
        let got = apply(&policy, &snapshots);
        let expected: &[(&str, &[&str])] = &[
            (
                "a",
                &[
                    "last snapshot",
                    "daily snapshot",
                    "weekly snapshot",
                    "monthly snapshot",
                ],
            ),
            ("b", &["last snapshot"]),
            ("c", &["daily snapshot"]),
            ("d", &[]),
            ("e", &["daily snapshot"]),
            ("f", &["daily snapshot", "weekly snapshot"]),
            ("g", &[]),
            ("h", &["weekly snapshot"]),
            ("i", &["monthly snapshot"]),
            ("j", &[]),
            ("k", &[]),
            ("l", &["monthly snapshot"]),
            ("m", &[]),
        ];
        let got: Vec<(&str, Vec<&str>)> = got
            .iter()
            .map(|d| {
                assert_eq!(d.keep, !d.reasons.is_empty(), "{d:?}");
                (
                    d.id.as_str(),
                    d.reasons.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        let expected: Vec<(&str, Vec<&str>)> =
            expected.iter().map(|(id, r)| (*id, r.to_vec())).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn a_rule_with_count_left_keeps_the_oldest_snapshot() {
        let snapshots = vec![
            snapshot("new", at(2024, 5, 2, 10, 0)),
            snapshot("mid", at(2024, 5, 1, 12, 0)),
            snapshot("old", at(2024, 5, 1, 8, 0)),
        ];
        let policy = Policy {
            keep_daily: 7,
            ..Policy::default()
        };
        let got = apply(&policy, &snapshots);
        let reasons: Vec<_> = got
            .iter()
            .map(|d| (d.id.as_str(), d.reasons.clone()))
            .collect();
        assert_eq!(
            reasons,
            vec![
                ("new", vec!["daily snapshot".to_string()]),
                ("mid", vec!["daily snapshot".to_string()]),
                ("old", vec!["oldest daily snapshot".to_string()]),
            ]
        );
        // With the count used up, the oldest goes.
        let policy = Policy {
            keep_daily: 2,
            ..Policy::default()
        };
        let keep: Vec<bool> = apply(&policy, &snapshots).iter().map(|d| d.keep).collect();
        assert_eq!(keep, vec![true, true, false]);
    }

    #[test]
    fn an_empty_policy_keeps_nothing() {
        let policy = Policy::default();
        assert!(policy.is_empty());
        let snapshots = vec![snapshot("a", 1), snapshot("b", 2)];
        let got = apply(&policy, &snapshots);
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|d| !d.keep && d.reasons.is_empty()));
        assert!(apply(&policy, &[]).is_empty());
        assert!(!Policy {
            keep_monthly: 1,
            ..Policy::default()
        }
        .is_empty());
    }

    #[test]
    fn equal_times_are_ordered_by_id() {
        let snapshots = vec![snapshot("a", 5), snapshot("c", 5), snapshot("b", 5)];
        let policy = Policy {
            keep_last: 1,
            ..Policy::default()
        };
        let got = apply(&policy, &snapshots);
        let ids: Vec<_> = got.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["c", "b", "a"]);
        assert!(got[0].keep && !got[1].keep && !got[2].keep);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn keep_last_keeps_exactly_the_n_newest(
                times in proptest::collection::vec(-10_000_000_000_000i64..10_000_000_000_000, 0..40),
                n in 0u32..50,
            ) {
                let snapshots: Vec<_> = times
                    .iter()
                    .enumerate()
                    .map(|(i, &t)| snapshot(&format!("{i:03}"), t))
                    .collect();
                let policy = Policy { keep_last: n, ..Policy::default() };
                let got = apply(&policy, &snapshots);
                prop_assert_eq!(got.len(), snapshots.len());
                let kept = got.iter().filter(|d| d.keep).count();
                prop_assert_eq!(kept, (n as usize).min(snapshots.len()));
                // The kept ones are the first ones, newest first.
                prop_assert!(got.iter().take(kept).all(|d| d.keep && d.reasons == ["last snapshot"]));
                let ms = |id: &str| snapshots.iter().find(|s| s.id == id).unwrap().unix_ms;
                prop_assert!(got.windows(2).all(|w| ms(&w[0].id) >= ms(&w[1].id)));
            }

            #[test]
            fn keep_daily_keeps_one_per_day_at_most_plus_the_oldest(
                times in proptest::collection::vec(0i64..100 * DAY_MS, 1..40),
                n in 1u32..10,
            ) {
                let snapshots: Vec<_> = times
                    .iter()
                    .enumerate()
                    .map(|(i, &t)| snapshot(&format!("{i:03}"), t))
                    .collect();
                let policy = Policy { keep_daily: n, ..Policy::default() };
                let got = apply(&policy, &snapshots);
                let ms = |id: &str| snapshots.iter().find(|s| s.id == id).unwrap().unix_ms;
                let mut days: Vec<i64> = got
                    .iter()
                    .filter(|d| d.keep && d.reasons == ["daily snapshot"])
                    .map(|d| day_of(ms(&d.id)))
                    .collect();
                let kept = days.len();
                days.dedup();
                prop_assert_eq!(days.len(), kept);
                let mut all_days: Vec<i64> = times.iter().map(|&t| day_of(t)).collect();
                all_days.sort_unstable_by(|a, b| b.cmp(a));
                all_days.dedup();
                prop_assert_eq!(kept, all_days.len().min(n as usize));
                prop_assert_eq!(&days[..], &all_days[..kept]);
            }
        }
    }
}
