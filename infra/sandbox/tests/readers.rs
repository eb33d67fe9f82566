//! The platform's readers (`shared::readers::fetch`) against each provider's sandbox: a sync returns
//! realistic data on the person's local dates with their offset, in few calls, the same every time; faults
//! come back as the errors the worker acts on.

mod common;

use common::{Sandbox, start};
use sandbox::Provider;
use serde_json::json;
use shared::model::{Batch, Metric};
use shared::providers::{Overrides, ProviderId};
use shared::readers::{FetchCtx, FetchError, Window, fetch};
use time::{Duration, OffsetDateTime, UtcOffset};

async fn read(sb: &Sandbox, token: &str, window: Window) -> Result<Batch, FetchError> {
    let provider = ProviderId::parse(sb.provider.id()).expect("the same provider names");
    let url = sb.running.url.clone();
    let overrides = Overrides::from_lookup(|var| (var == provider.env_var()).then(|| url.clone()));
    let ctx = FetchCtx { http: &sb.http, providers: &overrides, access_token: token, provider_user_id: None };
    fetch(provider, &ctx, window).await
}

/// A connected user (registered at Polar).
async fn connected(sb: &Sandbox, user: &str) -> String {
    let t = sb.connect(user).await;
    if sb.provider == Provider::Polar {
        let res =
            sb.http.post(sb.url("/v3/users")).bearer_auth(&t.access).json(&json!({"member-id": user})).send().await;
        assert_eq!(res.map(|r| r.status().as_u16()).ok(), Some(200));
    }
    t.access
}

/// The two weeks before yesterday: complete days in every time zone.
fn two_weeks() -> Window {
    let end = OffsetDateTime::now_utc().date() - Duration::days(2);
    Window { start: end - Duration::days(13), end }
}

fn metric_days(b: &Batch, m: Metric) -> usize {
    let mut days: Vec<_> = b.daily.iter().filter(|d| d.metrics.contains_key(&m)).map(|d| d.day).collect();
    days.dedup();
    days.len()
}

/// Every value is on a window date and carries one and the same non-UTC-or-UTC offset (the person's).
fn one_offset(b: &Batch, w: Window) -> Option<UtcOffset> {
    let offsets: Vec<Option<UtcOffset>> = b
        .daily
        .iter()
        .map(|d| d.utc_offset)
        .chain(b.sleep.iter().map(|s| s.utc_offset))
        .chain(b.workouts.iter().map(|x| x.utc_offset))
        .filter(Option::is_some)
        .collect();
    assert!(b.daily.iter().all(|d| w.contains(d.day)), "daily outside the window");
    assert!(b.sleep.iter().all(|s| w.contains(s.day)) && b.workouts.iter().all(|x| w.contains(x.day)));
    for s in &b.sleep {
        assert_eq!(s.end.to_offset(s.utc_offset.unwrap_or(UtcOffset::UTC)).date(), s.day, "a night ends on its day");
    }
    for x in &b.workouts {
        assert_eq!(
            x.start.to_offset(x.utc_offset.unwrap_or(UtcOffset::UTC)).date(),
            x.day,
            "a workout starts on its day"
        );
    }
    let first = *offsets.first()?;
    assert!(offsets.iter().all(|o| *o == first), "{offsets:?}");
    first
}

async fn requests(sb: &Sandbox) -> u64 {
    sb.state().await["data_requests"].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn oura_gives_activity_sleep_readiness_spo2_workouts_and_heart_rate_for_every_day() {
    let sb = start(Provider::Oura).await;
    let token = connected(&sb, "alice").await;
    let w = two_weeks();

    let b = read(&sb, &token, w).await.expect("oura reads");

    for m in [
        Metric::Steps,
        Metric::SleepScore,
        Metric::ReadinessScore,
        Metric::Spo2Pct,
        Metric::SleepTotalMin,
        Metric::HrvMs,
        Metric::RestingHeartRate,
    ] {
        assert_eq!(metric_days(&b, m), 14, "{m}");
    }
    assert!(b.sleep.len() >= 14 && !b.workouts.is_empty());
    assert_eq!(b.samples.len(), 14 * 288, "5-minute heart rate over 14 UTC days");
    one_offset(&b, w);
    // The night, not a nap, sets the day's sleep.
    for d in b.daily.iter().filter(|d| d.metrics.contains_key(&Metric::SleepTotalMin)) {
        assert!(d.metrics[&Metric::SleepTotalMin] > 300.0, "{} min on {}", d.metrics[&Metric::SleepTotalMin], d.day);
    }
    assert_eq!(requests(&sb).await, 6 + 5, "one call per collection, heart rate in 5 pages of 1,000");
    assert_eq!(read(&sb, &token, w).await.ok(), Some(b), "the same data every time");
}

#[tokio::test]
async fn whoop_gives_recovery_energy_and_sleep_on_local_days() {
    let sb = start(Provider::Whoop).await;
    let token = connected(&sb, "alice").await;
    let w = two_weeks();

    let b = read(&sb, &token, w).await.expect("whoop reads");

    for m in [
        Metric::ReadinessScore,
        Metric::HrvMs,
        Metric::RestingHeartRate,
        Metric::TotalEnergyKcal,
        Metric::SleepTotalMin,
    ] {
        assert_eq!(metric_days(&b, m), 14, "{m}");
    }
    assert_eq!(b.sleep.len(), 14);
    assert!(b.workouts.iter().all(|x| x.energy_kcal.is_some() && x.avg_heart_rate.is_some()));
    one_offset(&b, w);
    // 17 days of each collection at 25 a page: 4 collections, one page each, a second only for those over 25.
    let calls = requests(&sb).await;
    assert!((4..=8).contains(&calls), "{calls} calls");
}

#[tokio::test]
async fn withings_gives_weight_activity_and_nights_in_the_users_zone() {
    let sb = start(Provider::Withings).await;
    let token = connected(&sb, "alice").await;
    let w = Window { start: two_weeks().start - Duration::days(16), end: two_weeks().end };

    let b = read(&sb, &token, w).await.expect("withings reads");

    assert_eq!(metric_days(&b, Metric::Steps), 30);
    assert_eq!(metric_days(&b, Metric::SleepTotalMin), 30);
    assert!(metric_days(&b, Metric::WeightKg) >= 8, "about four weigh-ins a week");
    one_offset(&b, w);
    assert_eq!(requests(&sb).await, 1 + 2 + 2, "getmeas, then activity and sleep in pages of 20 days");
}

#[tokio::test]
async fn withings_answers_with_a_status_that_the_reader_turns_into_a_rate_limit_or_a_reconnect() {
    let sb = start(Provider::Withings).await;
    let token = connected(&sb, "alice").await;
    let forged = read(&sb, "withings-forged", two_weeks()).await;
    sb.set_faults(json!({"data": "429"})).await;
    let limited = read(&sb, &token, two_weeks()).await;
    sb.set_faults(json!({"data": "500"})).await;
    let broken = read(&sb, &token, two_weeks()).await;

    assert_eq!(limited, Err(FetchError::RateLimited { provider: ProviderId::Withings, retry_after: 60 }));
    assert!(matches!(forged, Err(FetchError::Unauthorized(_))), "{forged:?}");
    assert!(matches!(broken, Err(FetchError::Unavailable(_))), "{broken:?}");
}

#[tokio::test]
async fn strava_gives_workouts_with_their_local_offsets() {
    let sb = start(Provider::Strava).await;
    let token = connected(&sb, "alice").await;
    let w = Window { start: two_weeks().end - Duration::days(59), end: two_weeks().end };

    let b = read(&sb, &token, w).await.expect("strava reads");

    assert!(b.workouts.len() >= 8, "about one day in three over 60 days: {}", b.workouts.len());
    assert!(b.workouts.iter().all(|x| x.avg_heart_rate.is_some() && x.end > x.start));
    one_offset(&b, w);
    assert_eq!(requests(&sb).await, 1, "one page of 100 holds them");
}

#[tokio::test]
async fn polar_gives_the_recent_exercises_activity_and_nights() {
    let sb = start(Provider::Polar).await;
    let token = connected(&sb, "alice").await;
    let w = two_weeks();

    let b = read(&sb, &token, w).await.expect("polar reads");

    assert_eq!(metric_days(&b, Metric::Steps), 14);
    assert_eq!(metric_days(&b, Metric::SleepTotalMin), 14);
    assert!(!b.workouts.is_empty());
    one_offset(&b, w);
    assert_eq!(requests(&sb).await, 1 + 3, "the registration, then one call per collection");
}

#[tokio::test]
async fn polar_data_is_refused_until_the_user_is_registered() {
    let sb = start(Provider::Polar).await;
    let t = sb.connect("bob").await;

    let before = read(&sb, &t.access, two_weeks()).await;

    assert!(matches!(before, Err(FetchError::Unauthorized(_))), "{before:?}");
}

#[tokio::test]
async fn google_health_gives_steps_weight_exercise_sleep_and_heart_rate_on_local_days() {
    let sb = start(Provider::GoogleHealth).await;
    let token = connected(&sb, "alice").await;
    let w = two_weeks();

    let b = read(&sb, &token, w).await.expect("google reads");

    assert_eq!(metric_days(&b, Metric::Steps), 14);
    assert_eq!(metric_days(&b, Metric::SleepTotalMin), 14);
    assert!(metric_days(&b, Metric::WeightKg) >= 4);
    assert_eq!(b.samples.len(), 14 * 96);
    let offset = one_offset(&b, w);
    assert!(b.samples.iter().all(|s| s.utc_offset == offset));
    assert_eq!(requests(&sb).await, 5, "one call per data type");
}

#[tokio::test]
async fn garmin_gives_dailies_read_by_upload_day() {
    let sb = start(Provider::Garmin).await;
    let token = connected(&sb, "alice").await;
    let w = Window { start: two_weeks().end - Duration::days(6), end: two_weeks().end };

    let b = read(&sb, &token, w).await.expect("garmin reads");

    for m in
        [Metric::Steps, Metric::DistanceM, Metric::ActiveEnergyKcal, Metric::TotalEnergyKcal, Metric::RestingHeartRate]
    {
        assert_eq!(metric_days(&b, m), 7, "{m}");
    }
    one_offset(&b, w);
    assert_eq!(requests(&sb).await, 7 + 2, "one call per day of uploads, plus the days around");
}

#[tokio::test]
async fn a_spent_budget_and_a_server_error_stop_a_read_with_what_the_worker_needs() {
    for provider in
        [Provider::Whoop, Provider::Strava, Provider::GoogleHealth, Provider::Garmin, Provider::Oura, Provider::Polar]
    {
        let sb = start(provider).await;
        let token = connected(&sb, "alice").await;
        sb.set_faults(json!({"rate_limit": 1, "rate_limit_window_seconds": 120})).await;
        let _spends_the_budget = read(&sb, &token, two_weeks()).await;

        let limited = read(&sb, &token, two_weeks()).await;
        sb.set_faults(json!({"rate_limit": null, "data": "500"})).await;
        let broken = read(&sb, &token, two_weeks()).await;

        let p = ProviderId::parse(provider.id()).expect("same names");
        assert!(
            matches!(limited, Err(FetchError::RateLimited { provider: q, retry_after }) if q == p && (1..=120).contains(&retry_after)),
            "{provider}: {limited:?}"
        );
        assert!(matches!(broken, Err(FetchError::Unavailable(_))), "{provider}: {broken:?}");
    }
}
