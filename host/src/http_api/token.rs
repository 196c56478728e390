//! The `[api]` bearer token, kept only as its SHA-256. Comparing digests in
//! constant time makes the time a check takes independent of both the
//! token's content and its length.

use std::fmt;

use axum::http::{HeaderMap, StatusCode};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::identity::bearer_token;

pub struct ApiToken {
    digest: [u8; 32],
}

impl ApiToken {
    pub fn new(token: &str) -> Self {
        Self {
            digest: Sha256::digest(token).into(),
        }
    }

    fn matches(&self, given: &str) -> bool {
        Sha256::digest(given)
            .as_slice()
            .ct_eq(self.digest.as_slice())
            .into()
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(****)")
    }
}

/// Checks a request's bearer header against the `[api]` token (`None`: the
/// API is off).
pub fn check_api_token(expected: Option<&ApiToken>, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = expected else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "api_disabled",
            "the HTTP API is off: set `api.token` in the manifest or SWITCHBOARD_API_TOKEN",
        ));
    };
    match bearer_token(headers) {
        Some(given) if expected.matches(given) => Ok(()),
        Some(_) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_token",
            "the bearer token is wrong",
        )),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing_token",
            "send `Authorization: Bearer <token>`",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_matches() {
        let token = ApiToken::new("s3cret-token");
        assert!(token.matches("s3cret-token"));
        for wrong in ["", "s3cret-toke", "s3cret-token2", "S3cret-token", "x"] {
            assert!(!token.matches(wrong), "{wrong}");
        }
        assert_eq!(format!("{token:?}"), "ApiToken(****)");
    }
}
