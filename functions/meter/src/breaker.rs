//! A circuit breaker per tenant and upstream API, in this process's memory (each warm Lambda instance keeps
//! its own). `threshold` failures in a row (5xx, 529, timeouts, refused connections) open it: calls are
//! answered 503 at once, without reserving budget. After `cooldown` one call goes through as a probe
//! (half-open); its success closes the breaker, its failure opens it for another cooldown. Upstream 429s
//! and 4xx are the caller's business and count as neither.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use shared::ids::TenantId;
use shared::meter::LlmProvider;

#[derive(Debug, Default)]
struct State {
    failures: u32,
    open_until: Option<Instant>,
    probing: bool,
}

#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    states: Mutex<HashMap<(TenantId, LlmProvider), State>>,
}

/// What a call may do.
#[derive(Debug, PartialEq, Eq)]
pub enum Gate {
    Closed,
    /// The one call let through to test an open breaker.
    Probe,
    /// Refused for this long.
    Open(Duration),
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self { threshold: threshold.max(1), cooldown, states: Mutex::new(HashMap::new()) }
    }

    pub fn check(&self, tenant: &TenantId, api: LlmProvider, now: Instant) -> Gate {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let Some(s) = states.get_mut(&(tenant.clone(), api)) else { return Gate::Closed };
        match s.open_until {
            None => Gate::Closed,
            Some(until) if now < until => Gate::Open(until - now),
            Some(_) if s.probing => Gate::Open(Duration::from_secs(1)),
            Some(_) => {
                s.probing = true;
                Gate::Probe
            }
        }
    }

    pub fn success(&self, tenant: &TenantId, api: LlmProvider) {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        states.remove(&(tenant.clone(), api));
    }

    pub fn failure(&self, tenant: &TenantId, api: LlmProvider, now: Instant) {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let s = states.entry((tenant.clone(), api)).or_default();
        s.failures += 1;
        if s.probing || s.failures >= self.threshold {
            s.open_until = Some(now + self.cooldown);
            s.probing = false;
        }
    }

    /// A probe that ended neither way (the caller went away): let the next call probe.
    pub fn abandon_probe(&self, tenant: &TenantId, api: LlmProvider) {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = states.get_mut(&(tenant.clone(), api)) {
            s.probing = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_in_a_row_open_the_breaker_and_one_probe_after_the_cooldown_closes_it() {
        let b = Breaker::new(3, Duration::from_secs(30));
        let (t, api, now) = (TenantId::generate(), LlmProvider::Anthropic, Instant::now());
        for _ in 0..2 {
            b.failure(&t, api, now);
        }
        assert_eq!(b.check(&t, api, now), Gate::Closed);
        b.failure(&t, api, now);
        assert!(matches!(b.check(&t, api, now + Duration::from_secs(29)), Gate::Open(_)));
        // Another tenant and the other API are untouched.
        assert_eq!(b.check(&TenantId::generate(), api, now), Gate::Closed);
        assert_eq!(b.check(&t, LlmProvider::OpenAi, now), Gate::Closed);
        let later = now + Duration::from_secs(31);
        assert_eq!(b.check(&t, api, later), Gate::Probe);
        assert!(matches!(b.check(&t, api, later), Gate::Open(_)), "one probe at a time");
        b.success(&t, api);
        assert_eq!(b.check(&t, api, later), Gate::Closed);
    }

    #[test]
    fn a_failed_probe_opens_the_breaker_again() {
        let b = Breaker::new(1, Duration::from_secs(10));
        let (t, api, now) = (TenantId::generate(), LlmProvider::OpenAi, Instant::now());
        b.failure(&t, api, now);
        let later = now + Duration::from_secs(11);
        assert_eq!(b.check(&t, api, later), Gate::Probe);
        b.failure(&t, api, later);
        assert!(matches!(b.check(&t, api, later + Duration::from_secs(5)), Gate::Open(_)));
        assert_eq!(b.check(&t, api, later + Duration::from_secs(11)), Gate::Probe);
    }
}
