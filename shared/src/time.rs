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
}
