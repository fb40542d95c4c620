//! Optional API keys (Bearer; only SHA-256 digests are kept) and a per-caller rate limit.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::state::AppState;

/// Who is calling: owns the jobs and files it creates.
#[derive(Debug, Clone)]
pub struct Caller {
    /// `key_` and the first 16 hex digits of the key's digest, or `anonymous` when keys are off.
    pub owner: String,
}

pub fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

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

/// Middleware for `/v1/*`: checks the key (when keys are configured), then the rate limit.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let owner = if state.key_hashes.is_empty() {
        None
    } else {
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        let Some(token) = token else {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing_api_key",
                "this server needs an API key: send `Authorization: Bearer YOUR_KEY`",
            )
            .into_response();
        };
        let digest = sha256_hex(token);
        if !state.key_hashes.contains(&digest) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_api_key",
                "the API key is not valid",
            )
            .into_response();
        }
        Some(format!("key_{}", &digest[..16]))
    };
    let limit_key = owner.clone().unwrap_or_else(|| {
        req.extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or("anonymous".to_string(), |c| c.0.ip().to_string())
    });
    if let Err(wait) = state.limiter.check(&limit_key) {
        state
            .metrics
            .rejected_rate_limited
            .fetch_add(1, Ordering::Relaxed);
        return ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_exceeded",
            format!(
                "more than {} requests a minute; retry in {wait} s",
                state.settings.rate_limit_per_minute
            ),
        )
        .with_retry_after(wait)
        .into_response();
    }
    req.extensions_mut().insert(Caller {
        owner: owner.unwrap_or_else(|| "anonymous".into()),
    });
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_sha256() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

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
