//! One person's deterministic days, shared by every provider's data endpoints: the night that ended on a local
//! date, the day's activity and workout, and the morning weigh-in. Each provider seeds them with its own id, so
//! the same user id is a different person at each provider, the same person on every call.

use time::{Date, Duration, OffsetDateTime, PrimitiveDateTime, Time, Weekday};

use crate::ids;
use crate::people::Person;
use crate::provider::Provider;

pub(crate) struct Day<'a> {
    pub provider: &'a str,
    pub user: &'a str,
    pub person: &'a Person,
    pub date: Date,
    key: String,
}

pub(crate) struct Night {
    pub start: OffsetDateTime,
    pub end: OffsetDateTime,
    pub deep_s: u64,
    pub rem_s: u64,
    pub light_s: u64,
    pub awake_s: u64,
    pub efficiency: u64,
    pub avg_hr: u64,
    pub lowest_hr: u64,
    pub hrv_ms: u64,
    pub score: u64,
}

impl Night {
    pub fn asleep_s(&self) -> u64 {
        self.deep_s + self.rem_s + self.light_s
    }
    pub fn in_bed_s(&self) -> u64 {
        (self.end - self.start).whole_seconds().max(0) as u64
    }
}

pub(crate) struct Activity {
    pub steps: u64,
    pub distance_m: u64,
    pub active_kcal: u64,
    pub total_kcal: u64,
}

pub(crate) struct Work {
    pub sport: usize,
    pub start: OffsetDateTime,
    pub end: OffsetDateTime,
    pub kcal: u64,
    pub distance_m: Option<u64>,
    pub avg_hr: u64,
    pub max_hr: u64,
}

/// Sports as (running?, cycling?) so providers can name them their way.
pub(crate) const SPORTS: [&str; 4] = ["running", "cycling", "strength", "walking"];

impl<'a> Day<'a> {
    pub fn new(provider: Provider, user: &'a str, person: &'a Person, date: Date) -> Self {
        Day { provider: provider.id(), user, person, date, key: date.to_string() }
    }

    pub fn r(&self, what: &str, lo: u64, hi: u64) -> u64 {
        ids::in_range(&[self.provider, self.user, &self.key, what], lo, hi)
    }

    pub fn id(&self, what: &str) -> String {
        ids::uuid_like(&[self.provider, self.user, &self.key, what])
    }

    pub fn offset(&self) -> time::UtcOffset {
        crate::data::offset(self.person)
    }

    /// Local wall clock on this date, in the person's offset.
    pub fn at(&self, minutes_after_midnight: u64) -> OffsetDateTime {
        PrimitiveDateTime::new(self.date, Time::MIDNIGHT).assume_offset(self.offset())
            + Duration::minutes(minutes_after_midnight as i64)
    }

    /// The night that ended on this date's morning: to bed 22:00-00:30 the evening before, 6.5-9 h in bed.
    pub fn night(&self) -> Night {
        let start = self.at(0) - Duration::minutes(120) + Duration::minutes(self.r("bed", 0, 150) as i64);
        let in_bed = self.r("in-bed", 390, 540) * 60;
        let awake_s = self.r("awake", 15, 60) * 60;
        let asleep = in_bed - awake_s;
        let deep_s = asleep * self.r("deep%", 14, 24) / 100;
        let rem_s = asleep * self.r("rem%", 18, 26) / 100;
        let resting = ids::in_range(&[self.provider, self.user, "resting-hr"], 48, 62);
        Night {
            start,
            end: start + Duration::seconds(in_bed as i64),
            deep_s,
            rem_s,
            light_s: asleep - deep_s - rem_s,
            awake_s,
            efficiency: asleep * 100 / in_bed,
            avg_hr: resting + self.r("avg-hr", 3, 8),
            lowest_hr: resting - self.r("low-hr", 0, 3),
            hrv_ms: self.r("hrv", 28, 85),
            score: self.r("sleep-score", 55, 95),
        }
    }

    pub fn activity(&self) -> Activity {
        let base = ids::in_range(&[self.provider, self.user, "steps-base"], 5_000, 11_000);
        let weekend = matches!(self.date.weekday(), Weekday::Saturday | Weekday::Sunday);
        let steps = base * (self.r("steps-factor", 55, 145) + if weekend { 15 } else { 0 }) / 100;
        let active_kcal = steps * self.r("kcal-per-1000-steps", 36, 48) / 1_000 + self.r("kcal-extra", 0, 120);
        let p = self.person;
        let bmr =
            (10.0 * p.weight_kg + 625.0 * p.height_m - 5.0 * p.age as f64 + if p.female { -161.0 } else { 5.0 }) as u64;
        Activity { steps, distance_m: steps * 78 / 100, active_kcal, total_kcal: bmr + active_kcal }
    }

    /// A workout on about one day in three, at 17:30-19:00 local.
    pub fn workout(&self) -> Option<Work> {
        if !ids::seed(&[self.provider, self.user, &self.key, "workout"]).is_multiple_of(3) {
            return None;
        }
        let sport = self.r("sport", 0, SPORTS.len() as u64 - 1) as usize;
        let minutes = self.r("minutes", 30, 75);
        let start = self.at(17 * 60 + 30 + self.r("start", 0, 90));
        let distance_m = match sport {
            0 => Some(minutes * self.r("pace", 150, 220)),
            1 => Some(minutes * self.r("speed", 380, 520)),
            3 => Some(minutes * self.r("walk", 70, 95)),
            _ => None,
        };
        Some(Work {
            sport,
            start,
            end: start + Duration::minutes(minutes as i64),
            kcal: minutes * self.r("kcal-min", 6, 12),
            distance_m,
            avg_hr: self.r("w-avg-hr", 118, 152),
            max_hr: self.r("w-max-hr", 160, 186),
        })
    }

    /// A weigh-in at 06:30-08:00 local on about four mornings in seven: (time, kg).
    pub fn weighing(&self) -> Option<(OffsetDateTime, f64)> {
        if self.r("weighs", 0, 6) >= 4 {
            return None;
        }
        let drift = (self.r("kg-drift", 0, 30) as f64 - 15.0) / 10.0;
        Some((
            self.at(6 * 60 + 30 + self.r("weigh-at", 0, 90)),
            ((self.person.weight_kg + drift) * 100.0).round() / 100.0,
        ))
    }
}

/// Dates `start..=end`.
pub(crate) fn dates(start: Date, end: Date) -> impl Iterator<Item = Date> {
    std::iter::successors(Some(start), |d| d.next_day()).take_while(move |d| *d <= end)
}

/// An IANA zone without daylight saving for each sandbox offset, as Withings names zones.
pub(crate) fn zone_name(offset_minutes: i32) -> &'static str {
    match offset_minutes {
        -480 => "Pacific/Pitcairn",
        -420 => "America/Phoenix",
        -300 => "America/Bogota",
        -240 => "America/La_Paz",
        60 => "Africa/Lagos",
        120 => "Africa/Johannesburg",
        330 => "Asia/Kolkata",
        540 => "Asia/Tokyo",
        _ => "Atlantic/Reykjavik",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::people;

    #[test]
    fn a_night_adds_up_and_ends_on_its_morning() {
        let p = people::person(Provider::Whoop, "u");
        let Ok(date) = Date::from_calendar_date(2026, time::Month::March, 4) else { panic!("bad date") };
        let n = Day::new(Provider::Whoop, "u", &p, date).night();
        assert_eq!(n.asleep_s() + n.awake_s, n.in_bed_s());
        assert_eq!(n.end.to_offset(crate::data::offset(&p)).date(), date);
        assert!(n.start < n.end && n.lowest_hr < n.avg_hr);
    }
}
