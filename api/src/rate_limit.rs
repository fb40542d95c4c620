//! A token bucket per caller. Its own module, depending on nothing of the service, so that
//! the shared state can hold one without depending on the middleware that consults it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// A token bucket per caller: `per_minute` requests, refilled evenly; 0 turns it off.
pub struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(per_minute: u32) -> Self {
        RateLimiter {
            per_minute,
            buckets: Mutex::default(),
        }
    }

    /// Ok, or the seconds until a request would be allowed.
    pub fn check(&self, caller: &str) -> Result<(), u64> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(self.per_minute);
        let per_second = capacity / 60.0;
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > 100_000 {
            // Forget callers whose buckets are full again, so addresses cannot grow the map forever.
            buckets.retain(|_, (tokens, at)| {
                *tokens + at.elapsed().as_secs_f64() * per_second < capacity
            });
        }
        let (tokens, at) = buckets.entry(caller.to_string()).or_insert((capacity, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * per_second).min(capacity);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / per_second).ceil() as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_empties_and_says_when_to_retry() {
        let limiter = RateLimiter::new(2);
        assert!(limiter.check("a").is_ok());
        assert!(limiter.check("a").is_ok());
        let wait = limiter.check("a").unwrap_err();
        assert!((1..=30).contains(&wait), "{wait}");
        assert!(limiter.check("b").is_ok(), "buckets are per caller");
    }
}
