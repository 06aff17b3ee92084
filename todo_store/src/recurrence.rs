//! Recurring tasks: RFC 5545 rules expanded in an IANA time zone.
//!
//! A task's `recurrence` is an RRULE value (`FREQ=WEEKLY;BYDAY=MO,WE`) and a zone. Its
//! `DTSTART` is never taken from the rule: it is the due date the client last set, expressed in
//! the task's zone (see [`Task::recurrence_start`](crate::Task::recurrence_start)). Occurrences
//! are computed by the `rrule` crate in that zone, so 09:00 local stays 09:00 local across
//! daylight-saving changes.
//!
//! Completing a recurring task moves its `due_at` to the rule's first occurrence strictly after
//! the current one ([`next_occurrence`]); when there is none (`COUNT` or `UNTIL` ran out), the
//! task completes like any other.

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::task::Checker;

/// The zone of a recurrence that names none.
pub const TIMEZONE_DEFAULT: &str = "UTC";
/// Longest rule, in bytes.
pub const RULE_MAX: usize = 500;

/// How a task repeats: an RFC 5545 `RRULE` value and the IANA zone it is computed in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Recurrence {
    /// The `RRULE` value, e.g. `FREQ=WEEKLY;BYDAY=MO,WE`. `FREQ` must be `DAILY`, `WEEKLY`,
    /// `MONTHLY` or `YEARLY`; `DTSTART` is not allowed (it comes from the task's `due_at`).
    pub rule: String,
    /// An IANA zone name such as `Europe/Berlin`; empty means [`TIMEZONE_DEFAULT`].
    pub timezone: String,
}

impl Recurrence {
    /// A rule computed in UTC.
    pub fn new(rule: impl Into<String>) -> Self {
        Self {
            rule: rule.into(),
            timezone: TIMEZONE_DEFAULT.to_owned(),
        }
    }

    /// A rule computed in `timezone`.
    pub fn in_zone(rule: impl Into<String>, timezone: impl Into<String>) -> Self {
        Self {
            rule: rule.into(),
            timezone: timezone.into(),
        }
    }
}

/// A rule ready to expand: parsed, checked, with its zone.
struct Parsed {
    rule: rrule::RRule<rrule::Unvalidated>,
    zone: chrono_tz::Tz,
}

/// Why a rule cannot be used, and which field says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RuleError {
    pub field: &'static str,
    pub message: String,
}

fn rule_error(message: impl Into<String>) -> RuleError {
    RuleError {
        field: "recurrence.rule",
        message: message.into(),
    }
}

/// Runs code of the `rrule` crate, turning a panic in it (it has `expect`s on paths it believes
/// unreachable) into an error: no input may bring the store down.
fn guarded<T>(f: impl FnOnce() -> Result<T, RuleError>) -> Result<T, RuleError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(rule_error("cannot be expanded")))
}

fn parse(r: &Recurrence) -> Result<Parsed, RuleError> {
    let zone_name = r.timezone.trim();
    let zone_name = if zone_name.is_empty() {
        TIMEZONE_DEFAULT
    } else {
        zone_name
    };
    let zone = chrono_tz::Tz::from_str(zone_name).map_err(|_| RuleError {
        field: "recurrence.timezone",
        message: "must be an IANA time zone name such as Europe/Berlin".into(),
    })?;
    let text = r.rule.trim();
    if text.is_empty() {
        return Err(rule_error("must not be empty"));
    }
    if text.len() > RULE_MAX {
        return Err(rule_error(format!("must be at most {RULE_MAX} characters")));
    }
    if !text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"=;,+-".contains(&b))
    {
        return Err(rule_error(
            "must be an RRULE value such as FREQ=WEEKLY;BYDAY=MO (no property name, no line breaks)",
        ));
    }
    if text.split(';').any(|part| {
        part.split('=')
            .next()
            .is_some_and(|k| k.eq_ignore_ascii_case("DTSTART"))
    }) {
        return Err(rule_error(
            "must not contain DTSTART: the rule starts at the task's due_at",
        ));
    }
    let rule = guarded(|| {
        rrule::RRule::<rrule::Unvalidated>::from_str(text).map_err(|e| rule_error(short(&e)))
    })?;
    use rrule::Frequency as F;
    if !matches!(
        rule.get_freq(),
        F::Daily | F::Weekly | F::Monthly | F::Yearly
    ) {
        return Err(rule_error("FREQ must be DAILY, WEEKLY, MONTHLY or YEARLY"));
    }
    let rule = floating_until_in_zone(rule, text, zone)?;
    Ok(Parsed { rule, zone })
}

/// RFC 5545 wants `UNTIL` in UTC (`…Z`) when the start has a zone. An `UNTIL` without `Z`
/// (`UNTIL=20260630T170000`, or a date: `UNTIL=20260630`) is read as a time of the task's
/// zone instead of being refused; a date means the end of that day.
fn floating_until_in_zone(
    rule: rrule::RRule<rrule::Unvalidated>,
    text: &str,
    zone: chrono_tz::Tz,
) -> Result<rrule::RRule<rrule::Unvalidated>, RuleError> {
    let Some(until) = rule.get_until().filter(|u| u.timezone().is_local()) else {
        return Ok(rule);
    };
    let raw = text
        .split(';')
        .find_map(|p| {
            p.split_once('=')
                .filter(|(k, _)| k.eq_ignore_ascii_case("UNTIL"))
                .map(|(_, v)| v)
        })
        .unwrap_or("");
    let mut naive = until.naive_local();
    if raw.len() == 8 {
        naive += chrono::Duration::seconds(86_399);
    }
    let local = zone.from_local_datetime(&naive);
    let instant = local
        .earliest()
        .or_else(|| {
            // In a daylight-saving gap: the first instant after it.
            zone.from_local_datetime(&(naive + chrono::Duration::hours(1)))
                .earliest()
        })
        .ok_or_else(|| rule_error("UNTIL is not a time in the zone"))?;
    Ok(rule.until(instant.with_timezone(&rrule::Tz::UTC)))
}

/// The `rrule` crate's message without its "RRule parsing error: " prefix.
fn short(e: &rrule::RRuleError) -> String {
    let text = e.to_string();
    match text.split_once(": ") {
        Some((_, rest)) => rest.to_owned(),
        None => text,
    }
}

/// `DTSTART` for a rule starting at `start`: that instant in `zone`, whole seconds (the
/// `rrule` crate generates whole-second times; a fraction would put the first occurrence
/// before its own start).
fn dt_start(zone: chrono_tz::Tz, start: DateTime<Utc>) -> Result<DateTime<rrule::Tz>, RuleError> {
    let secs = Utc
        .timestamp_opt(start.timestamp(), 0)
        .single()
        .ok_or_else(|| rule_error("cannot start at this due_at"))?;
    Ok(secs.with_timezone(&rrule::Tz::Tz(zone)))
}

/// The first occurrence of `recurrence` strictly after `after`, the rule starting (`DTSTART`)
/// at `start` in the recurrence's zone; `None` when the rule has no further occurrence
/// (`COUNT` or `UNTIL` ran out, or none within the `rrule` crate's search limits).
///
/// An error names the field at fault: `recurrence.rule` (unparsable, unsupported `FREQ`,
/// `DTSTART` in the rule, `UNTIL` before the start…) or `recurrence.timezone`.
pub fn next_occurrence(
    recurrence: &Recurrence,
    start: DateTime<Utc>,
    after: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, crate::StoreError> {
    next_after(recurrence, start, after).map_err(|e| crate::StoreError::invalid(e.field, e.message))
}

pub(crate) fn next_after(
    recurrence: &Recurrence,
    start: DateTime<Utc>,
    after: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, RuleError> {
    let p = parse(recurrence)?;
    let dt_start = dt_start(p.zone, start)?;
    guarded(|| {
        let set = p
            .rule
            .build(dt_start)
            .map_err(|e| rule_error(short(&e)))?
            .limit();
        Ok(set
            .into_iter()
            .map(|d| d.with_timezone(&Utc))
            .find(|d| *d > after))
    })
}

impl Checker {
    /// Checks a recurrence's rule and zone (not yet against a start: see [`next_after`]), and
    /// normalises it: the rule trimmed, the zone's canonical name.
    pub(crate) fn recurrence(&mut self, r: Recurrence) -> Recurrence {
        match parse(&r) {
            Ok(p) => Recurrence {
                rule: r.rule.trim().to_owned(),
                timezone: p.zone.name().to_owned(),
            },
            Err(e) => {
                self.fail(e.field, e.message);
                r
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn field(r: &Recurrence) -> Option<&'static str> {
        parse(r).err().map(|e| e.field)
    }

    #[test]
    fn bad_rules_and_zones_name_their_field() {
        let rule = |r: &str| field(&Recurrence::new(r));
        assert_eq!(rule("FREQ=DAILY"), None);
        assert_eq!(rule(" FREQ=WEEKLY;BYDAY=MO,WE "), None);
        for bad in [
            "",
            "FREQ=HOURLY",
            "FREQ=MINUTELY;BYSECOND=1",
            "FREQ=SECONDLY",
            "FREQ=DAILY;DTSTART=20260101T000000Z",
            "DTSTART:20260101T000000Z\nRRULE:FREQ=DAILY",
            "RRULE:FREQ=DAILY",
            "FREQ=FORTNIGHTLY",
            "COUNT=3",
            "FREQ=DAILY;BYDAY=XX",
            "FREQ=DAILY;FOO=1",
            "FREQ=DAILY;COUNT=-1",
            "not a rule",
            &"FREQ=DAILY;".repeat(100),
        ] {
            assert_eq!(rule(bad), Some("recurrence.rule"), "{bad:?}");
        }
        let zone = |z: &str| field(&Recurrence::in_zone("FREQ=DAILY", z));
        assert_eq!(zone("Europe/Berlin"), None);
        assert_eq!(zone(""), None, "empty is UTC");
        assert_eq!(zone("Mars/Olympus"), Some("recurrence.timezone"));
        assert_eq!(zone("europe/berlin"), Some("recurrence.timezone"));
    }

    #[test]
    fn the_next_occurrence_keeps_local_time_across_dst() {
        let r = Recurrence::in_zone("FREQ=DAILY", "Europe/Berlin");
        // Saturday 28 March 2026, 09:00 CET (UTC+1); clocks go forward on Sunday the 29th.
        let start = at("2026-03-28T08:00:00Z");
        let next = next_after(&r, start, start).unwrap().unwrap();
        assert_eq!(next, at("2026-03-29T07:00:00Z"), "09:00 CEST");
        let after = next_after(&r, start, next).unwrap().unwrap();
        assert_eq!(after, at("2026-03-30T07:00:00Z"));
    }

    #[test]
    fn until_before_the_start_is_a_rule_error() {
        let r = Recurrence::new("FREQ=DAILY;UNTIL=20200101T000000Z");
        let start = at("2026-01-01T09:00:00Z");
        assert_eq!(
            next_after(&r, start, start).unwrap_err().field,
            "recurrence.rule"
        );
    }

    #[test]
    fn until_without_z_is_a_time_of_the_zone() {
        // Daily at 09:00 Berlin from Monday 5 January 2026.
        let start = at("2026-01-05T08:00:00Z");
        let last = |rule: &str| {
            let r = Recurrence::in_zone(rule, "Europe/Berlin");
            let mut t = start;
            while let Some(n) = next_after(&r, start, t).unwrap() {
                t = n;
            }
            t
        };
        // 09:00 on the 7th is within a local UNTIL of 09:00 that day, not of 08:00.
        assert_eq!(
            last("FREQ=DAILY;UNTIL=20260107T090000"),
            at("2026-01-07T08:00:00Z")
        );
        assert_eq!(
            last("FREQ=DAILY;UNTIL=20260107T080000"),
            at("2026-01-06T08:00:00Z")
        );
        // A date includes its whole day.
        assert_eq!(
            last("FREQ=DAILY;UNTIL=20260107"),
            at("2026-01-07T08:00:00Z")
        );
        // With Z it is UTC: 08:30 UTC on the 7th is after 09:00 Berlin (08:00 UTC).
        assert_eq!(
            last("FREQ=DAILY;UNTIL=20260107T083000Z"),
            at("2026-01-07T08:00:00Z")
        );
    }

    #[test]
    fn an_exhausted_or_empty_rule_has_no_next_occurrence() {
        let start = at("2026-01-01T09:00:00Z");
        let r = Recurrence::new("FREQ=DAILY;COUNT=2");
        let second = next_after(&r, start, start).unwrap().unwrap();
        assert_eq!(next_after(&r, start, second).unwrap(), None);
        let never = Recurrence::new("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30");
        assert_eq!(next_after(&never, start, start).unwrap(), None);
    }
}
