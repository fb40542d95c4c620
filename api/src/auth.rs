//! Optional API keys (Bearer; only SHA-256 digests are kept), then the per-caller rate limit
//! ([`crate::rate_limit`]).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

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

/// Middleware for `/v1/*`: checks the key (when keys are configured), then the rate limit.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let owner = if state.key_hashes.is_empty() {
        None
    } else {
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token);
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

/// The token of `Bearer TOKEN`: the scheme name is case-insensitive (RFC 9110, 11.1), so
/// `bearer` and `BEARER` work as well.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for value in ["Bearer k1", "bearer k1", "BEARER k1", "BeArEr   k1 "] {
            assert_eq!(bearer_token(value), Some("k1"), "{value:?}");
        }
        for value in ["Basic k1", "Bearer", "Bearer ", "Bearerk1"] {
            assert_eq!(bearer_token(value), None, "{value:?}");
        }
    }

    #[test]
    fn digest_is_sha256() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
