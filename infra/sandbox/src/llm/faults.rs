//! The LLM sandboxes' fault switches (`/sandbox/faults`): counted switches that fail the next n generation
//! requests, a stream delay, and a seeded random mix for load tests.

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde::{Deserialize, Deserializer, Serialize};

/// Probabilities of each fault per generation request, drawn from a generator seeded with `seed`, so a load test
/// sees the same faults on the same requests every run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RandomFaults {
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub overloaded: f64,
    #[serde(default)]
    pub rate_limited: f64,
    #[serde(default)]
    pub server_error: f64,
    #[serde(default)]
    pub hang: f64,
    /// Streams only: the stream is cut after a random number of events (never the last one).
    #[serde(default)]
    pub drop: f64,
}

impl RandomFaults {
    fn check(&self) -> Result<(), String> {
        let all = [self.overloaded, self.rate_limited, self.server_error, self.hang, self.drop];
        if all.iter().any(|p| !(0.0..=1.0).contains(p)) {
            return Err("each random fault probability must be between 0 and 1".into());
        }
        if all.iter().sum::<f64>() > 1.0 + 1e-9 {
            return Err("the random fault probabilities must add up to at most 1".into());
        }
        Ok(())
    }
}

/// The switches as they stand. Counted switches (`overloaded`, ...) are how many of the next requests fail.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Faults {
    pub overloaded: u64,
    pub rate_limited: u64,
    /// The `retry-after` seconds a rate-limited answer carries.
    pub retry_after: u64,
    pub server_error: u64,
    pub hang: u64,
    /// How many of the next streaming responses are cut after `drop_after` events.
    pub drop: u64,
    pub drop_after: u64,
    /// How many of the next streaming responses send an `error` event after `stream_error_after` events and end.
    pub stream_error: u64,
    pub stream_error_after: u64,
    /// Delay between two stream events.
    pub slow_ms: u64,
    pub random: Option<RandomFaults>,
    #[serde(skip)]
    rng: Option<StdRng>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            overloaded: 0,
            rate_limited: 0,
            retry_after: 1,
            server_error: 0,
            hang: 0,
            drop: 0,
            drop_after: 3,
            stream_error: 0,
            stream_error_after: 3,
            slow_ms: 0,
            random: None,
            rng: None,
        }
    }
}

/// `POST /sandbox/faults`: a partial update; absent fields keep their value, `"random": null` turns the mix off.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FaultsUpdate {
    overloaded: Option<u64>,
    rate_limited: Option<u64>,
    retry_after: Option<u64>,
    server_error: Option<u64>,
    hang: Option<u64>,
    drop: Option<u64>,
    drop_after: Option<u64>,
    stream_error: Option<u64>,
    stream_error_after: Option<u64>,
    slow_ms: Option<u64>,
    #[serde(default, deserialize_with = "present")]
    random: Option<Option<RandomFaults>>,
}

/// Tells `"random": null` (Some(None)) from an absent field (None).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// How a stream is cut short.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Cut {
    /// The connection is aborted after this many events.
    DropAfter(u64),
    /// As a fraction of the stream's events (the random mix), resolved once the stream's length is known.
    DropAt(f64),
    /// An `error` event is sent after this many events, then the stream ends.
    ErrorAfter(u64),
}

/// What happens to one generation request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Fault {
    None,
    Hang,
    Overloaded,
    RateLimited {
        retry_after: u64,
    },
    ServerError,
    /// Streams only.
    Cut(Cut),
}

fn take(n: &mut u64) -> bool {
    if *n > 0 {
        *n -= 1;
        true
    } else {
        false
    }
}

impl Faults {
    pub fn apply(&mut self, u: FaultsUpdate) -> Result<(), String> {
        if let Some(Some(r)) = &u.random {
            r.check()?;
        }
        let fields = [
            (u.overloaded, &mut self.overloaded),
            (u.rate_limited, &mut self.rate_limited),
            (u.retry_after, &mut self.retry_after),
            (u.server_error, &mut self.server_error),
            (u.hang, &mut self.hang),
            (u.drop, &mut self.drop),
            (u.drop_after, &mut self.drop_after),
            (u.stream_error, &mut self.stream_error),
            (u.stream_error_after, &mut self.stream_error_after),
            (u.slow_ms, &mut self.slow_ms),
        ];
        for (value, slot) in fields {
            if let Some(v) = value {
                *slot = v;
            }
        }
        if let Some(random) = u.random {
            self.rng = random.map(|r| StdRng::seed_from_u64(r.seed));
            self.random = random;
        }
        Ok(())
    }

    /// Decides (and consumes) the fault of the next valid generation request. Counted switches come first, in the
    /// order hang, overloaded, rate_limited, server_error, then (streams only) drop and stream_error; when none is
    /// armed, the random mix draws one number per request.
    pub fn next(&mut self, stream: bool) -> Fault {
        if take(&mut self.hang) {
            return Fault::Hang;
        }
        if take(&mut self.overloaded) {
            return Fault::Overloaded;
        }
        if take(&mut self.rate_limited) {
            return Fault::RateLimited { retry_after: self.retry_after };
        }
        if take(&mut self.server_error) {
            return Fault::ServerError;
        }
        if stream && take(&mut self.drop) {
            return Fault::Cut(Cut::DropAfter(self.drop_after));
        }
        if stream && take(&mut self.stream_error) {
            return Fault::Cut(Cut::ErrorAfter(self.stream_error_after));
        }
        let (Some(r), Some(rng)) = (self.random, self.rng.as_mut()) else {
            return Fault::None;
        };
        let u: f64 = rng.r#gen();
        // Drawn for every request, used by drops only, so the sequence does not depend on which requests stream.
        let at: f64 = rng.r#gen();
        let mut edge = 0.0;
        let pick = [
            (r.overloaded, Fault::Overloaded),
            (r.rate_limited, Fault::RateLimited { retry_after: self.retry_after }),
            (r.server_error, Fault::ServerError),
            (r.hang, Fault::Hang),
            (r.drop, Fault::Cut(Cut::DropAt(at))),
        ];
        for (p, fault) in pick {
            edge += p;
            if u < edge {
                return match fault {
                    Fault::Cut(_) if !stream => Fault::None,
                    other => other,
                };
            }
        }
        Fault::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(v: serde_json::Value) -> FaultsUpdate {
        serde_json::from_value(v).expect("a valid update")
    }

    #[test]
    fn counted_switches_fail_exactly_n_requests() {
        let mut f = Faults::default();
        f.apply(update(serde_json::json!({"overloaded": 2}))).expect("applies");
        assert_eq!(f.next(false), Fault::Overloaded);
        assert_eq!(f.next(true), Fault::Overloaded);
        assert_eq!(f.next(false), Fault::None);
    }

    #[test]
    fn a_drop_waits_for_a_streaming_request() {
        let mut f = Faults::default();
        f.apply(update(serde_json::json!({"drop": 1, "drop_after": 5}))).expect("applies");
        assert_eq!(f.next(false), Fault::None);
        assert_eq!(f.next(true), Fault::Cut(Cut::DropAfter(5)));
        assert_eq!(f.next(true), Fault::None);
    }

    #[test]
    fn the_random_mix_repeats_for_the_same_seed_and_roughly_matches_its_rates() {
        let run = || {
            let mut f = Faults::default();
            f.apply(update(serde_json::json!({"random": {"seed": 7, "overloaded": 0.2}}))).expect("applies");
            (0..1000).map(|_| f.next(false)).collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        let overloaded = a.iter().filter(|f| **f == Fault::Overloaded).count();
        assert!((150..250).contains(&overloaded), "{overloaded}");
    }

    #[test]
    fn probabilities_over_one_are_refused() {
        let mut f = Faults::default();
        assert!(f.apply(update(serde_json::json!({"random": {"overloaded": 0.7, "hang": 0.7}}))).is_err());
    }
}
