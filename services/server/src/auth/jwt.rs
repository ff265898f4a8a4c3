//! Short-lived login tokens: HS256 only, with `exp`, `iss` and `aud` checked.

use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const JWT_ISSUER: &str = "capex";
pub const JWT_AUDIENCE: &str = "capex-api";
/// Clock difference tolerated when checking `exp`.
pub const JWT_LEEWAY_S: u64 = 5;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub sub: Uuid,
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
}

pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    pub ttl_s: u64,
    /// Key of the job tokens (see [`super::job_token`]), derived from the same secret.
    pub(crate) job_token_key: [u8; 32],
}

impl JwtKeys {
    pub fn new(secret: &[u8], ttl_s: u64) -> Self {
        // One pinned algorithm: a token whose header names another (none, RS256, HS512)
        // is refused before its signature is looked at.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[JWT_ISSUER]);
        validation.set_audience(&[JWT_AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = JWT_LEEWAY_S;
        JwtKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl_s,
            job_token_key: super::job_token::derive_key(secret),
        }
    }

    /// A token for `user_id`, and when it expires (unix seconds).
    pub fn issue(&self, user_id: Uuid) -> Result<(String, i64), jsonwebtoken::errors::Error> {
        let now = Utc::now().timestamp();
        let exp = now + i64::try_from(self.ttl_s).unwrap_or(i64::MAX / 2);
        let claims = Claims { sub: user_id, iss: JWT_ISSUER.into(), aud: JWT_AUDIENCE.into(), iat: now, exp };
        Ok((encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?, exp))
    }

    /// Signs arbitrary claims; tests use it to build expired or wrong-audience tokens.
    pub fn sign(&self, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
        encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
    }

    pub fn verify(&self, token: &str) -> Result<Claims, jsonwebtoken::errors::Error> {
        decode::<Claims>(token, &self.decoding, &self.validation).map(|data| data.claims)
    }
}
