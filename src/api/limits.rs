//! Request limits that are not hyper settings: the per-agency request rate
//! (a token bucket per agency) and the exports running at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One token bucket per agency: `rate` tokens a second up to `burst`; a
/// request takes one token or is refused with the time until one is there.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    // std Mutex: held for one bucket update, never across an `.await`.
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    pub fn new(rate_per_sec: f64, burst: u32) -> RateLimiter {
        RateLimiter {
            rate: rate_per_sec,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Take a token for `key` at `now`, or say how long until one is
    /// available. Keys are agency ids (a bounded set), so the map stays small.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = match buckets.get_mut(key) {
            Some(b) => b,
            None => buckets.entry(key.to_string()).or_insert(Bucket {
                tokens: self.burst,
                last: now,
            }),
        };
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.rate))
        }
    }
}

/// `Retry-After` in whole seconds, at least 1 (the header has no fractions).
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0).max(u64::from(wait.as_secs() == 0))
}

/// Caps on the exports running at once, in all and per agency. An export
/// costs seconds of CPU on up to four threads and holds a stored version in
/// memory: without a cap, a handful of clients could starve the lookups.
/// An export holds its slot from its checks to its last byte (or until its
/// client goes away).
pub struct ExportSlots {
    max_total: usize,
    max_per_agency: usize,
    // std Mutex: held for one count update, never across an `.await`.
    running: Mutex<Running>,
}

#[derive(Default)]
struct Running {
    total: usize,
    by_agency: HashMap<String, usize>,
}

/// Why an export could not start.
#[derive(Debug, PartialEq, Eq)]
pub enum ExportsBusy {
    /// The agency already runs this many exports.
    Agency(usize),
    /// The broker already runs this many exports.
    Broker(usize),
}

/// A running export's slot, given back when dropped.
pub struct ExportSlot {
    slots: Arc<ExportSlots>,
    agency: String,
}

impl ExportSlots {
    pub fn new(max_total: usize, max_per_agency: usize) -> Arc<ExportSlots> {
        Arc::new(ExportSlots {
            max_total: max_total.max(1),
            max_per_agency: max_per_agency.max(1),
            running: Mutex::new(Running::default()),
        })
    }

    /// Take a slot for an export by `agency`, or say which cap is reached.
    pub fn take(self: &Arc<Self>, agency: &str) -> Result<ExportSlot, ExportsBusy> {
        let mut r = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let mine = r.by_agency.get(agency).copied().unwrap_or(0);
        if mine >= self.max_per_agency {
            return Err(ExportsBusy::Agency(mine));
        }
        if r.total >= self.max_total {
            return Err(ExportsBusy::Broker(r.total));
        }
        r.total += 1;
        *r.by_agency.entry(agency.to_string()).or_default() += 1;
        Ok(ExportSlot {
            slots: self.clone(),
            agency: agency.to_string(),
        })
    }

    /// Exports running now.
    pub fn running(&self) -> usize {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

impl Drop for ExportSlot {
    fn drop(&mut self) {
        let mut r = self.slots.running.lock().unwrap_or_else(|e| e.into_inner());
        r.total -= 1;
        if let Some(n) = r.by_agency.get_mut(&self.agency) {
            *n -= 1;
            if *n == 0 {
                r.by_agency.remove(&self.agency);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let l = RateLimiter::new(10.0, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.check("a", t0).is_ok());
        }
        let wait = l.check("a", t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        // Another agency has its own bucket.
        assert!(l.check("b", t0).is_ok());
        // 100 ms later exactly one more request fits.
        let t1 = t0 + Duration::from_millis(100);
        assert!(l.check("a", t1).is_ok());
        assert!(l.check("a", t1).is_err());
        // A long pause refills only up to the burst.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(l.check("a", t2).is_ok());
        }
        assert!(l.check("a", t2).is_err());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
    }

    #[test]
    fn exports_are_capped_per_agency_and_in_all_until_their_slots_drop() {
        let slots = ExportSlots::new(3, 2);
        let a1 = slots.take("a").unwrap();
        let a2 = slots.take("a").unwrap();
        assert_eq!(slots.take("a").err(), Some(ExportsBusy::Agency(2)));
        let b1 = slots.take("b").unwrap();
        // Agency c has none running, but the broker has three.
        assert_eq!(slots.take("c").err(), Some(ExportsBusy::Broker(3)));
        assert_eq!(slots.running(), 3);
        drop(a1);
        assert_eq!(slots.running(), 2);
        let c1 = slots.take("c").unwrap();
        assert_eq!(slots.take("b").err(), Some(ExportsBusy::Broker(3)));
        drop((a2, b1, c1));
        assert_eq!(slots.running(), 0);
        // Every count went back to zero: the full caps are there again.
        let again: Vec<_> = ["a", "a", "b"]
            .iter()
            .map(|g| slots.take(g).unwrap())
            .collect();
        assert_eq!(again.len(), 3);
    }
}
