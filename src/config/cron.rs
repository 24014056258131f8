//! Cron schedules: when `rebake serve` scans (rebake.yaml's `schedule.scan`, a policy's
//! `schedule`).
//!
//! The `croner` crate parses the expressions and finds the times they fire. This wrapper keeps
//! the form rebake documents and checks:
//! - exactly five fields and the nicknames `@hourly`, `@daily` (`@midnight`), `@weekly`,
//!   `@monthly`; croner's extensions (`L`, `W`, `#`, `?`, a `+` before the day of week, seconds
//!   and years, `@yearly`) are refused, and so are names outside their field;
//! - `5/15` means "from 5 to the end, every 15" (croner calls that a sloppy range);
//! - the day rule of Vixie cron: when both day fields are restricted, a day matching either
//!   counts; a field that starts with `*` (like `*/2`) is not restricted. croner takes only a
//!   bare `*` as unrestricted, so `0 0 */2 * 1` would fire on odd days *or* Mondays there; the
//!   wrapper asks croner for both (odd Mondays), as Vixie cron does;
//! - errors name the field; no fire time is looked for beyond five years.
//!
//! Where this differs from rebake's own parser before croner: a range that ends on Sunday by
//! name (`mon-sun`) is now accepted (croner reads that `sun` as 7); a `+` before a number
//! (`+5`, which Rust's number parsing took) and a step over 65535 are refused.

use std::fmt;

use chrono::{Duration, NaiveDateTime, Timelike};
use croner::errors::CronError;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use serde::Serialize;

/// A five-field cron expression (minute hour day-of-month month day-of-week), or one of
/// `@hourly`, `@daily`, `@weekly`, `@monthly`. Times are matched in whatever time zone the
/// caller passes (the server uses UTC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSchedule {
    expression: String,
    cron: Cron,
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

/// One of the five fields, for checking its syntax and naming it in errors.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const FIELDS: [Field; 5] = [
    Field {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
    },
    Field {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
    },
    Field {
        name: "day of month",
        min: 1,
        max: 31,
        names: &[],
    },
    Field {
        name: "month",
        min: 1,
        max: 12,
        names: &[
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ],
    },
    Field {
        name: "day of week",
        min: 0,
        max: 7,
        names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
    },
];

/// How far ahead [`CronSchedule::next_after`] looks.
const HORIZON_DAYS: i64 = 5 * 366;

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
        for (text, field) in fields.iter().zip(&FIELDS) {
            check_syntax(text, field)?;
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .sloppy_ranges(true)
            .dom_and_dow(fields[2].starts_with('*') || fields[4].starts_with('*'))
            .build();
        let cron = parser.parse(&fields.join(" ")).map_err(|error| {
            // croner does not say which field it refused: find it by parsing each alone.
            let wrong = (0..5).find_map(|i| {
                let mut alone = ["*"; 5];
                alone[i] = fields[i];
                parser.parse(&alone.join(" ")).err().map(|e| (i, e))
            });
            match wrong {
                Some((i, e)) => {
                    let field = &FIELDS[i];
                    format!(
                        "{} field: '{}' {}; it takes {} to {}",
                        field.name,
                        fields[i],
                        reason(&e),
                        field.min,
                        field.max
                    )
                }
                None => reason(&error),
            }
        })?;
        Ok(CronSchedule {
            expression: expression.trim().to_string(),
            cron,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.expression
    }

    /// Whether the schedule fires in the minute of `time`.
    pub fn matches(&self, time: &NaiveDateTime) -> bool {
        let minute = time.with_second(0).and_then(|t| t.with_nanosecond(0));
        minute.is_some_and(|t| self.cron.is_time_matching(&t).unwrap_or(false))
    }

    /// The first minute strictly after `time` at which the schedule fires; None if there is
    /// none within five years (like "31 of February").
    pub fn next_after(&self, time: &NaiveDateTime) -> Option<NaiveDateTime> {
        let minute = time.with_second(0)?.with_nanosecond(0)?;
        let limit = minute + Duration::minutes(1) + Duration::days(HORIZON_DAYS);
        // croner gives up (an error) at its own limit, the year 5000: for a date that never
        // comes, like 31 February, that search takes some tens of milliseconds.
        let next = self.cron.find_next_occurrence(&minute, false).ok()?;
        (next < limit).then_some(next)
    }
}

/// Refuses what croner would accept beyond rebake's form (see the module's documentation):
/// each comma-separated part must be `*`, a number or name, or a range of two, with an
/// optional `/step`. Values, ranges and steps are croner's to check.
fn check_syntax(text: &str, field: &Field) -> Result<(), String> {
    let is_value = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            || field.names.contains(&s.to_ascii_lowercase().as_str())
    };
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => (range, Some(step)),
            None => (part, None),
        };
        if let Some(step) = step {
            if step.is_empty() || !step.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!(
                    "{} field: step '{step}' is not a positive number",
                    field.name
                ));
            }
        }
        if range == "*" {
            continue;
        }
        let bad = match range.split_once('-') {
            Some((low, high)) => [low, high].into_iter().find(|s| !is_value(s)),
            None => (!is_value(range)).then_some(range),
        };
        if let Some(bad) = bad {
            return Err(format!("{} field: '{bad}' is not a number", field.name));
        }
    }
    Ok(())
}

/// croner's reason for refusing a field, as the end of a sentence.
fn reason(error: &CronError) -> String {
    let text = match error {
        CronError::ComponentError(text) => text.clone(),
        other => other.to_string(),
    };
    let text = text.trim_end_matches('.');
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text.to_string(),
    }
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
