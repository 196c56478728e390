//! Who a client is: JSON Web Tokens verified with the manifest's `[auth]`
//! key. The token's `sub` claim is the user id, for sockets (handshake
//! `auth.token` or an `Authorization: Bearer` header) and for plugin HTTP
//! routes (the bearer header). A verified token also says until when it
//! holds ([`Identity`]): a socket is disconnected then.

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

/// Shortest HS256 secret accepted, in bytes: RFC 7518 (3.2) asks for a key
/// at least as long as the SHA-256 output, or tokens can be forged by
/// guessing the secret offline.
pub const MIN_SECRET_BYTES: usize = 32;

/// A key that cannot verify anything, or not safely: the manifest names it.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the {algorithm} public key: {source}; give a PEM-encoded public key")]
    PublicKey {
        algorithm: JwtAlgorithm,
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    #[error(
        "the HS256 secret is {length} bytes long; it needs at least {MIN_SECRET_BYTES} bytes: make one with `openssl rand -base64 32`"
    )]
    ShortSecret { length: usize },
}

/// Who a valid token names, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The `sub` claim.
    pub user_id: String,
    /// Unix time, in seconds, from which the token is refused as expired:
    /// its `exp` plus the clock skew allowed, the same bound as on connect.
    pub expires_at_s: u64,
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    /// Present: the validation requires it.
    exp: u64,
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
            JwtKey::Secret(secret) => {
                let secret = secret.expose().as_bytes();
                if secret.len() < MIN_SECRET_BYTES {
                    return Err(KeyError::ShortSecret {
                        length: secret.len(),
                    });
                }
                DecodingKey::from_secret(secret)
            }
            JwtKey::PublicKeyPem(pem) => match algorithm {
                Algorithm::ES256 => DecodingKey::from_ec_pem(pem.as_bytes()),
                _ => DecodingKey::from_rsa_pem(pem.as_bytes()),
            }
            .map_err(|source| KeyError::PublicKey {
                algorithm: accepts,
                source,
            })?,
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = settings.clock_skew.as_secs();
        validation.validate_nbf = true;
        // A configured issuer or audience is only checked when the claim is
        // there: without requiring it, a token that leaves it out would pass.
        let mut required = vec!["exp"];
        match &settings.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &settings.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        Ok(Self {
            key,
            validation,
            accepts,
        })
    }

    /// Who a token names, if it is valid now.
    pub fn verify(&self, token: &str) -> Result<Identity, IdentityError> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|error| self.explain(error))?
            .claims;
        match claims.sub {
            Some(user_id) if !user_id.is_empty() => Ok(Identity {
                user_id,
                // `decode` refuses a token once now > exp + leeway, in whole seconds.
                expires_at_s: claims
                    .exp
                    .saturating_add(self.validation.leeway)
                    .saturating_add(1),
            }),
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

    const SECRET: &str = "unit-test-secret-of-at-least-32-bytes";

    #[test]
    fn accepts_a_valid_token_and_names_each_refusal() {
        let verifier = Verifier::new(&settings(SECRET)).unwrap();
        let exp = now() + 60;
        let valid = token(json!({"sub": "alice", "exp": exp}), SECRET);
        assert_eq!(
            verifier.verify(&valid).unwrap(),
            Identity {
                user_id: "alice".to_owned(),
                expires_at_s: exp + 5 + 1,
            }
        );
        let within_skew = token(json!({"sub": "alice", "exp": now() - 2}), SECRET);
        assert_eq!(verifier.verify(&within_skew).unwrap().user_id, "alice");
        let cases = [
            (
                token(json!({"sub": "a", "exp": now() - 60}), SECRET),
                IdentityError::Expired,
            ),
            (
                token(
                    json!({"sub": "a", "exp": now() + 60}),
                    "another-secret-of-at-least-32-bytes",
                ),
                IdentityError::BadSignature,
            ),
            (
                token(json!({"exp": now() + 60}), SECRET),
                IdentityError::Rejected("it has no `sub` claim naming the user".to_owned()),
            ),
            (
                token(
                    json!({"sub": "a", "exp": now() + 600, "nbf": now() + 300}),
                    SECRET,
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
    fn a_configured_issuer_and_audience_must_be_in_the_token() {
        let verifier = Verifier::new(&AuthSettings {
            issuer: Some("https://id.example.com".to_owned()),
            audience: Some("switchboard".to_owned()),
            ..settings(SECRET)
        })
        .unwrap();
        let claims = |iss: Option<&str>, aud: Option<&str>| {
            let mut claims = json!({"sub": "a", "exp": now() + 60});
            if let Some(iss) = iss {
                claims["iss"] = json!(iss);
            }
            if let Some(aud) = aud {
                claims["aud"] = json!(aud);
            }
            token(claims, SECRET)
        };
        let rejected = |why: &str| Err(IdentityError::Rejected(why.to_owned()));
        let good = claims(Some("https://id.example.com"), Some("switchboard"));
        assert_eq!(verifier.verify(&good).unwrap().user_id, "a");
        let cases = [
            (claims(None, Some("switchboard")), "it has no `iss` claim"),
            (
                claims(Some("https://id.example.com"), None),
                "it has no `aud` claim",
            ),
            (
                claims(Some("https://evil.example.com"), Some("switchboard")),
                "wrong issuer (`iss`)",
            ),
            (
                claims(Some("https://id.example.com"), Some("other")),
                "wrong audience (`aud`)",
            ),
        ];
        for (token, why) in cases {
            assert_eq!(verifier.verify(&token), rejected(why), "{why}");
        }
    }

    #[test]
    fn refuses_hs256_secrets_shorter_than_32_bytes() {
        let short = Verifier::new(&settings(&"s".repeat(MIN_SECRET_BYTES - 1)));
        assert!(matches!(short, Err(KeyError::ShortSecret { length: 31 })));
        let message = short.err().unwrap().to_string();
        assert!(message.contains("at least 32") && message.contains("openssl rand -base64 32"));
        assert!(Verifier::new(&settings(&"s".repeat(MIN_SECRET_BYTES))).is_ok());
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
