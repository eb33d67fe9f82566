//! Timestamps: RFC 3339 UTC with millisecond precision, as the API conventions say.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Now, truncated to milliseconds so that a stored and a re-read time compare equal.
pub fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_millisecond(t.millisecond()).unwrap_or(t)
}

pub fn format(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.unix_timestamp().to_string())
}

pub fn now_rfc3339() -> String {
    format(now())
}
