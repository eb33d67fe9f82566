//! Timestamps: RFC 3339 UTC with exactly three fractional digits (`2026-11-29T03:05:37.320Z`), so that
//! stored times sort as strings in time order (DynamoDB sort keys and conditions compare them as strings).

use time::OffsetDateTime;
use time::macros::format_description;

/// Now, truncated to milliseconds so that a stored and a re-read time compare equal.
pub fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_millisecond(t.millisecond()).unwrap_or(t)
}

pub fn format(t: OffsetDateTime) -> String {
    let utc = t.to_offset(time::UtcOffset::UTC);
    utc.format(format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"))
        .unwrap_or_else(|_| utc.unix_timestamp().to_string())
}

pub fn now_rfc3339() -> String {
    format(now())
}

/// Parses a time as stored or as providers send it (RFC 3339 with any offset).
pub fn parse(raw: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339).ok()
}

/// A local calendar date as `YYYY-MM-DD`.
pub fn format_day(d: time::Date) -> String {
    d.format(format_description!("[year]-[month]-[day]")).unwrap_or_default()
}

pub fn parse_day(raw: &str) -> Option<time::Date> {
    time::Date::parse(raw, format_description!("[year]-[month]-[day]")).ok()
}

/// A UTC offset as `+02:00` / `-07:00`.
pub fn format_offset(o: time::UtcOffset) -> String {
    o.format(format_description!("[offset_hour sign:mandatory]:[offset_minute]")).unwrap_or_default()
}

pub fn parse_offset(raw: &str) -> Option<time::UtcOffset> {
    if raw == "Z" {
        return Some(time::UtcOffset::UTC);
    }
    time::UtcOffset::parse(raw, format_description!("[offset_hour sign:mandatory]:[offset_minute]")).ok()
}

/// serde for stored and served times: fixed-width RFC 3339 UTC out, any RFC 3339 in.
pub mod instant {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;

    pub fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let raw = String::deserialize(d)?;
        super::parse(&raw).ok_or_else(|| serde::de::Error::custom(format!("`{raw}` is not an RFC 3339 time")))
    }
}

/// serde for local dates (`YYYY-MM-DD`).
pub mod day {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::Date;

    pub fn serialize<S: Serializer>(d: &Date, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_day(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Date, D::Error> {
        let raw = String::deserialize(d)?;
        super::parse_day(&raw).ok_or_else(|| serde::de::Error::custom(format!("`{raw}` is not a date like 2026-11-29")))
    }
}

/// serde for optional UTC offsets (`+02:00`).
pub mod offset {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::UtcOffset;

    pub fn serialize<S: Serializer>(o: &Option<UtcOffset>, s: S) -> Result<S::Ok, S::Error> {
        match o {
            Some(o) => s.serialize_str(&super::format_offset(*o)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<UtcOffset>, D::Error> {
        let raw = Option::<String>::deserialize(d)?;
        raw.map(|r| {
            super::parse_offset(&r)
                .ok_or_else(|| serde::de::Error::custom(format!("`{r}` is not an offset like +02:00")))
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_have_a_fixed_width_so_that_string_order_is_time_order() {
        let a = format(time::macros::datetime!(2026-11-29 03:05:37.32 UTC));
        let b = format(time::macros::datetime!(2026-11-29 03:05:37.321 UTC));
        let c = format(time::macros::datetime!(2026-11-29 03:05:37 UTC));
        assert_eq!(a, "2026-11-29T03:05:37.320Z");
        assert_eq!(c, "2026-11-29T03:05:37.000Z");
        assert!(c < a && a < b);
        assert!(OffsetDateTime::parse(&a, &time::format_description::well_known::Rfc3339).is_ok());
    }

    #[test]
    fn days_and_offsets_read_back_as_written() {
        let d = time::macros::date!(2026 - 03 - 04);
        assert_eq!(parse_day(&format_day(d)), Some(d));
        assert_eq!(format_offset(time::macros::offset!(-7)), "-07:00");
        assert_eq!(parse_offset("+05:30"), Some(time::macros::offset!(+5:30)));
        assert_eq!(parse_offset("Z"), Some(time::UtcOffset::UTC));
        assert_eq!(parse_day("2026-02-30"), None);
    }
}
