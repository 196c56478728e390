//! Who a client is: JSON Web Tokens verified with the manifest's `[auth]`
//! key. The token's `sub` claim is the user id, for sockets (handshake
//! `auth.token` or an `Authorization: Bearer` header) and for plugin HTTP
//! routes (the bearer header).

use std::time::Duration;

use axum::http::{HeaderMap, header};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::manifest::{AuthSettings, JwtAlgorithm, JwtKey};

/// Why a client was not identified. The message is what it sees, in its
/// `connect_error` or in the HTTP error body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "authentication required: send a JWT as `auth.token` in the handshake or in an `Authorization: Bearer` header"
    )]
    Missing,
    #[error("token expired: get a new token and connect again")]
    Expired,
    #[error("token not valid yet: its `nbf` is in the future")]
    NotYetValid,
    #[error("token signature is invalid: it was forged or signed with another key")]
    BadSignature,
    #[error("token is signed with an algorithm this server does not accept (it accepts {0})")]
    WrongAlgorithm(JwtAlgorithm),
    #[error("token rejected: {0}")]
    Rejected(String),
    #[error("token is malformed: {0}")]
    Malformed(String),
}

impl IdentityError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Missing => "auth_required",
            Self::Expired => "token_expired",
            Self::NotYetValid | Self::Rejected(_) => "token_rejected",
            Self::BadSignature | Self::WrongAlgorithm(_) => "token_invalid",
            Self::Malformed(_) => "token_malformed",
        }
    }
}

/// A key that cannot verify anything: the manifest names it.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the {algorithm} public key: {source}; give a PEM-encoded public key")]
pub struct KeyError {
    algorithm: JwtAlgorithm,
    #[source]
    source: jsonwebtoken::errors::Error,
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
}

pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    accepts: JwtAlgorithm,
}

impl Verifier {
    pub fn new(settings: &AuthSettings) -> Result<Self, KeyError> {
        let accepts = settings.algorithm;
        let algorithm = match accepts {
            JwtAlgorithm::Hs256 => Algorithm::HS256,
            JwtAlgorithm::Rs256 => Algorithm::RS256,
            JwtAlgorithm::Es256 => Algorithm::ES256,
        };
        let key = match &settings.key {
            JwtKey::Secret(secret) => DecodingKey::from_secret(secret.expose().as_bytes()),
            JwtKey::PublicKeyPem(pem) => match algorithm {
                Algorithm::ES256 => DecodingKey::from_ec_pem(pem.as_bytes()),
                _ => DecodingKey::from_rsa_pem(pem.as_bytes()),
            }
            .map_err(|source| KeyError {
                algorithm: accepts,
                source,
            })?,
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = settings.clock_skew.as_secs();
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        match &settings.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &settings.issuer {
            validation.set_issuer(&[issuer]);
        }
        Ok(Self {
            key,
            validation,
            accepts,
        })
    }

    /// The user id a token names, if it is valid now.
    pub fn verify(&self, token: &str) -> Result<String, IdentityError> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|error| self.explain(error))?
            .claims;
        match claims.sub {
            Some(user_id) if !user_id.is_empty() => Ok(user_id),
            _ => Err(IdentityError::Rejected(
                "it has no `sub` claim naming the user".to_owned(),
            )),
        }
    }

    fn explain(&self, error: jsonwebtoken::errors::Error) -> IdentityError {
        match error.kind() {
            ErrorKind::ExpiredSignature => IdentityError::Expired,
            ErrorKind::ImmatureSignature => IdentityError::NotYetValid,
            ErrorKind::InvalidSignature => IdentityError::BadSignature,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                IdentityError::WrongAlgorithm(self.accepts)
            }
            ErrorKind::InvalidIssuer => IdentityError::Rejected("wrong issuer (`iss`)".to_owned()),
            ErrorKind::InvalidAudience => {
                IdentityError::Rejected("wrong audience (`aud`)".to_owned())
            }
            ErrorKind::MissingRequiredClaim(claim) => {
                IdentityError::Rejected(format!("it has no `{claim}` claim"))
            }
            _ => IdentityError::Malformed(error.to_string()),
        }
    }
}

/// The token of an `Authorization: Bearer` header.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|token| !token.is_empty())
}

/// Default tolerance between this node's clock and the token issuer's.
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    use super::*;
    use crate::manifest::Secret;

    fn settings(secret: &str) -> AuthSettings {
        AuthSettings {
            algorithm: JwtAlgorithm::Hs256,
            key: JwtKey::Secret(Secret::new(secret.to_owned())),
            clock_skew: Duration::from_secs(5),
            issuer: None,
            audience: None,
        }
    }

    fn token(claims: serde_json::Value, secret: &str) -> String {
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    #[test]
    fn accepts_a_valid_token_and_names_each_refusal() {
        let verifier = Verifier::new(&settings("s3cret")).unwrap();
        let valid = token(json!({"sub": "alice", "exp": now() + 60}), "s3cret");
        assert_eq!(verifier.verify(&valid).unwrap(), "alice");
        let within_skew = token(json!({"sub": "alice", "exp": now() - 2}), "s3cret");
        assert_eq!(verifier.verify(&within_skew).unwrap(), "alice");
        let cases = [
            (
                token(json!({"sub": "a", "exp": now() - 60}), "s3cret"),
                IdentityError::Expired,
            ),
            (
                token(json!({"sub": "a", "exp": now() + 60}), "other"),
                IdentityError::BadSignature,
            ),
            (
                token(json!({"exp": now() + 60}), "s3cret"),
                IdentityError::Rejected("it has no `sub` claim naming the user".to_owned()),
            ),
            (
                token(
                    json!({"sub": "a", "exp": now() + 600, "nbf": now() + 300}),
                    "s3cret",
                ),
                IdentityError::NotYetValid,
            ),
        ];
        for (token, expected) in cases {
            assert_eq!(verifier.verify(&token), Err(expected));
        }
        assert!(matches!(
            verifier.verify("not.a.jwt"),
            Err(IdentityError::Malformed(_))
        ));
    }

    #[test]
    fn reads_bearer_headers() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer_token(&headers), None);
        headers.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer_token(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer_token(&headers), None);
    }
}
