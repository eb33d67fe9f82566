//! Who a sandbox user is at a provider: ids, name, body and time zone, all derived from (provider, user).

use crate::ids;
use crate::provider::Provider;

const FIRST: [&str; 12] =
    ["Ada", "Bruno", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Keiko", "Liam"];
const LAST: [&str; 10] =
    ["Sandoval", "Okafor", "Lindqvist", "Moreau", "Tanaka", "Silva", "Kowalski", "Nguyen", "Fischer", "Haddad"];
/// UTC offsets in minutes; the sandbox users live in a spread of time zones.
const OFFSETS: [i32; 9] = [-480, -420, -300, -240, 0, 60, 120, 330, 540];

#[derive(Debug, Clone)]
pub(crate) struct Person {
    pub first_name: &'static str,
    pub last_name: &'static str,
    pub email: String,
    pub age: u64,
    pub weight_kg: f64,
    pub height_m: f64,
    pub female: bool,
    pub birth_year: i64,
    pub utc_offset_minutes: i32,
}

pub(crate) fn person(provider: Provider, user: &str) -> Person {
    let p = provider.id();
    let pick = |what: &str, n: usize| (ids::seed(&[p, user, what]) % n as u64) as usize;
    let age = ids::in_range(&[p, user, "age"], 21, 68);
    let female = ids::seed(&[p, user, "sex"]).is_multiple_of(2);
    let height_cm =
        if female { ids::in_range(&[p, user, "h"], 152, 180) } else { ids::in_range(&[p, user, "h"], 164, 196) };
    let bmi_tenths = ids::in_range(&[p, user, "bmi"], 195, 285);
    let height_m = height_cm as f64 / 100.0;
    let weight_kg = ((bmi_tenths as f64 / 10.0) * height_m * height_m * 10.0).round() / 10.0;
    let email = if user.contains('@') { user.to_string() } else { format!("{user}@sandbox.test") };
    Person {
        first_name: FIRST[pick("first", FIRST.len())],
        last_name: LAST[pick("last", LAST.len())],
        email,
        age,
        weight_kg,
        height_m,
        female,
        birth_year: 2026 - age as i64,
        utc_offset_minutes: OFFSETS[pick("tz", OFFSETS.len())],
    }
}

/// A numeric user id as Withings, Polar, WHOOP and Strava hand out.
pub(crate) fn numeric_id(provider: Provider, user: &str) -> u64 {
    ids::in_range(&[provider.id(), user, "numeric-id"], 10_000_000, 99_999_999)
}

/// A UUID user id as Oura and Garmin hand out.
pub(crate) fn uuid_id(provider: Provider, user: &str) -> String {
    ids::uuid_like(&[provider.id(), user, "uuid-id"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_is_the_same_person_every_time_and_differs_from_others() {
        let a = person(Provider::Oura, "sandbox-user-1");
        let b = person(Provider::Oura, "sandbox-user-1");
        assert_eq!((a.age, a.weight_kg.to_bits(), a.first_name), (b.age, b.weight_kg.to_bits(), b.first_name));
        assert_ne!(numeric_id(Provider::Polar, "u1"), numeric_id(Provider::Polar, "u2"));
        assert!((40.0..140.0).contains(&a.weight_kg));
    }
}
