//! Cron schedules: when `rebake serve` scans (rebake.yaml's `schedule.scan`, a policy's
//! `schedule`).

use std::fmt;

use chrono::{Datelike, Duration, NaiveDateTime, Timelike};
use serde::Serialize;

/// A five-field cron expression (minute hour day-of-month month day-of-week), or one of
/// `@hourly`, `@daily`, `@weekly`, `@monthly`. Times are matched in whatever time zone the
/// caller passes (the server uses UTC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSchedule {
    expression: String,
    minutes: u64,
    hours: u64,
    days_of_month: u64,
    months: u64,
    days_of_week: u64,
    /// cron's rule: when both day fields are restricted, a day matching either one counts.
    day_of_month_any: bool,
    day_of_week_any: bool,
}

impl Serialize for CronSchedule {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.expression)
    }
}

impl fmt::Display for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expression)
    }
}

const MONTH_NAMES: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAY_NAMES: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

impl CronSchedule {
    /// Parses an expression; the error says which field is wrong and why.
    pub fn parse(expression: &str) -> Result<Self, String> {
        let expanded = match expression.trim() {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!("it has {} fields, cron needs 5", fields.len()));
        }
        let minutes = parse_cron_field(fields[0], "minute", 0, 59, &[])?;
        let hours = parse_cron_field(fields[1], "hour", 0, 23, &[])?;
        let days_of_month = parse_cron_field(fields[2], "day of month", 1, 31, &[])?;
        let months = parse_cron_field(fields[3], "month", 1, 12, &MONTH_NAMES)?;
        let mut days_of_week = parse_cron_field(fields[4], "day of week", 0, 7, &DAY_NAMES)?;
        if days_of_week & (1 << 7) != 0 {
            days_of_week = (days_of_week | 1) & !(1 << 7); // 7 is Sunday too
        }
        Ok(CronSchedule {
            expression: expression.trim().to_string(),
            minutes,
            hours,
            days_of_month,
            months,
            days_of_week,
            day_of_month_any: fields[2].starts_with('*'),
            day_of_week_any: fields[4].starts_with('*'),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.expression
    }

    /// Whether the schedule fires in the minute of `time`.
    pub fn matches(&self, time: &NaiveDateTime) -> bool {
        let bit = |set: u64, n: u32| set & (1 << n) != 0;
        bit(self.minutes, time.minute())
            && bit(self.hours, time.hour())
            && bit(self.months, time.month())
            && self.day_matches(time)
    }

    fn day_matches(&self, time: &NaiveDateTime) -> bool {
        let dom = self.days_of_month & (1 << time.day()) != 0;
        let dow = self.days_of_week & (1 << time.weekday().num_days_from_sunday()) != 0;
        match (self.day_of_month_any, self.day_of_week_any) {
            (false, false) => dom || dow,
            _ => dom && dow,
        }
    }

    /// The first minute strictly after `time` at which the schedule fires; None if there is
    /// none within five years (like "31 of February").
    pub fn next_after(&self, time: &NaiveDateTime) -> Option<NaiveDateTime> {
        let start = time.date().and_hms_opt(time.hour(), time.minute(), 0)? + Duration::minutes(1);
        let limit = start + Duration::days(5 * 366);
        let mut t = start;
        while t < limit {
            if self.months & (1 << t.month()) == 0 || !self.day_matches(&t) {
                t = t.date().succ_opt()?.and_hms_opt(0, 0, 0)?;
            } else if self.hours & (1 << t.hour()) == 0 {
                t = t.date().and_hms_opt(t.hour(), 0, 0)? + Duration::hours(1);
            } else if self.minutes & (1 << t.minute()) == 0 {
                t += Duration::minutes(1);
            } else {
                return Some(t);
            }
        }
        None
    }
}

fn parse_cron_field(
    field: &str,
    what: &str,
    min: u32,
    max: u32,
    names: &[&str],
) -> Result<u64, String> {
    let number = |text: &str| -> Result<u32, String> {
        let lower = text.to_ascii_lowercase();
        let value = match names.iter().position(|n| *n == lower) {
            Some(i) => i as u32 + min,
            None => text
                .parse::<u32>()
                .map_err(|_| format!("{what} field: '{text}' is not a number"))?,
        };
        if value < min || value > max {
            return Err(format!("{what} field: {value} is out of range {min}-{max}"));
        }
        Ok(value)
    };
    let mut set = 0u64;
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                    format!("{what} field: step '{step}' is not a positive number")
                })?;
                (range, step)
            }
            None => (part, 1),
        };
        let (low, high) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (number(a)?, number(b)?)
        } else {
            let start = number(range)?;
            // "5/15" means from 5 to the end, in steps.
            (start, if part.contains('/') { max } else { start })
        };
        if low > high {
            return Err(format!("{what} field: range {low}-{high} is backwards"));
        }
        for value in (low..=high).step_by(step as usize) {
            set |= 1 << value;
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_fields() {
        let cron = CronSchedule::parse("30 4 * * 1-5").unwrap();
        let t = |s: &str| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
        // 2025-06-06 is a Friday.
        assert!(cron.matches(&t("2025-06-06 04:30")));
        assert!(!cron.matches(&t("2025-06-07 04:30")));
        assert_eq!(
            cron.next_after(&t("2025-06-06 04:30")),
            Some(t("2025-06-09 04:30"))
        );
        let every = CronSchedule::parse("*/20 * * * *").unwrap();
        assert_eq!(
            every.next_after(&t("2025-01-01 00:41")),
            Some(t("2025-01-01 01:00"))
        );
        assert_eq!(
            CronSchedule::parse("0 0 1 jan,jul sun")
                .unwrap()
                .next_after(&t("2025-01-01 00:00")),
            Some(t("2025-01-05 00:00"))
        );
        assert!(CronSchedule::parse("60 * * * *")
            .unwrap_err()
            .contains("minute"));
        assert!(CronSchedule::parse("* * * *").is_err());
        assert!(CronSchedule::parse("*/0 * * * *").is_err());
        assert!(CronSchedule::parse("@daily").is_ok());
        assert!(CronSchedule::parse("0 0 31 2 *")
            .unwrap()
            .next_after(&t("2025-01-01 00:00"))
            .is_none());
    }
}
