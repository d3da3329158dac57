//! Retention: which dates the config's `snapshots` section no longer keeps, and why.
//!
//! Pure: the dates served and the time in, the dates due out, oldest first, each with the rule
//! that prunes it. The store removes them (all in one transaction) and the app audits each.

use std::time::{Duration, SystemTime};

use super::date::Date;

/// The config's `snapshots` section: which dates to keep. Both limits may be set; a date
/// either of them rules out is pruned. The newest date is never pruned, and files refused at
/// start are never pruned (they are not served; fix or delete them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Keep the dates from this many days before today (UTC) on, today and later included.
    pub keep_days: Option<u32>,
    /// Keep at most this many dates, the newest.
    pub keep_count: Option<usize>,
}

/// Which limit of [`Retention`] pruned a date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    KeepDays(u32),
    KeepCount(usize),
}

impl Retention {
    pub fn keeps_all(&self) -> bool {
        self.keep_days.is_none() && self.keep_count.is_none()
    }

    /// The dates among `served` (any order) that are due for pruning at `now`, oldest first,
    /// each with the rule that prunes it (`keep_count` named first when both do).
    pub fn due(&self, served: &[Date], now: SystemTime) -> Vec<(Date, Rule)> {
        let mut dates = served.to_vec();
        dates.sort_unstable();
        dates.dedup();
        // The newest date answers every request without `Date`: never leave the API empty.
        let Some(newest) = dates.pop() else { return Vec::new() };
        let keep_from = self.keep_days.map(|days| {
            let back = Duration::from_secs(u64::from(days) * 86_400);
            // A window reaching before 1970 keeps everything after it.
            (days, Date::of(now.checked_sub(back).unwrap_or(SystemTime::UNIX_EPOCH)))
        });
        // The count includes the newest date.
        let over = self.keep_count.map_or(0, |count| (dates.len() + 1).saturating_sub(count));
        let mut due = Vec::new();
        for (i, date) in dates.into_iter().enumerate() {
            debug_assert!(date < newest);
            match (self.keep_count, keep_from) {
                (Some(count), _) if i < over => due.push((date, Rule::KeepCount(count))),
                (_, Some((days, from))) if date < from => due.push((date, Rule::KeepDays(days))),
                _ => {}
            }
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dates(texts: &[&str]) -> Vec<Date> {
        texts.iter().map(|t| Date::parse(t).unwrap()).collect()
    }

    /// 2024-05-14T12:00:00Z.
    fn noon() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_715_688_000)
    }

    fn due(retention: Retention, served: &[&str]) -> Vec<(String, Rule)> {
        let due = retention.due(&dates(served), noon());
        due.into_iter().map(|(d, rule)| (d.to_string(), rule)).collect()
    }

    #[test]
    fn keep_count_keeps_the_newest() {
        let five = ["2024-05-12", "2024-05-10", "2024-05-14", "2024-05-11", "2024-05-13"];
        let three = Retention { keep_count: Some(3), ..Retention::default() };
        assert_eq!(
            due(three, &five),
            [
                ("2024-05-10".to_owned(), Rule::KeepCount(3)),
                ("2024-05-11".to_owned(), Rule::KeepCount(3))
            ]
        );
        assert_eq!(due(three, &five[..3]), []);
        let one = Retention { keep_count: Some(1), ..Retention::default() };
        assert_eq!(due(one, &five).len(), 4);
        assert_eq!(due(Retention::default(), &five), []);
        assert_eq!(due(three, &[]), []);
    }

    #[test]
    fn keep_days_counts_back_from_today_and_never_prunes_the_newest() {
        let two = Retention { keep_days: Some(2), ..Retention::default() };
        // Today is 2024-05-14: 2024-05-12 is two days back and kept; a future date is kept.
        assert_eq!(
            due(two, &["2024-05-11", "2024-05-12", "2024-05-14", "2024-06-01", "2023-01-01"]),
            [
                ("2023-01-01".to_owned(), Rule::KeepDays(2)),
                ("2024-05-11".to_owned(), Rule::KeepDays(2))
            ]
        );
        // Only old dates: the newest of them stays, so the API still answers.
        assert_eq!(
            due(two, &["2024-01-01", "2024-01-02"]),
            [("2024-01-01".to_owned(), Rule::KeepDays(2))]
        );
        let both = Retention { keep_days: Some(2), keep_count: Some(2) };
        assert_eq!(
            due(both, &["2024-05-10", "2024-05-13", "2024-05-14"]),
            [("2024-05-10".to_owned(), Rule::KeepCount(2))]
        );
    }
}
