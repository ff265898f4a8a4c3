//! Request extractors whose rejections are API problems naming the offending field.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use capex_core::CreditsError;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// JSON body extractor: like `axum::Json`, but a body that does not parse becomes a
/// problem naming the JSON path of the bad field.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/json"))
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected a JSON body with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|rejection| ApiError::new(rejection.status(), "body_unreadable", rejection.body_text()))?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parses JSON bytes into `T`, mapping failures to problems with the field's path.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        // A map key is part of the path: one holding a control character is named escaped.
        let path = crate::input::printable(&err.path().to_string()).into_owned();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", format!("malformed JSON: {inner}"));
        }
        let message = inner.to_string();
        let message = message.split(" at line ").next().unwrap_or(&message).to_string();
        let field = if path == "." { missing_field_name(&message).unwrap_or_default() } else { path };
        let code = credits_error_code(&message)
            .or_else(|| crate::input::TextError::code_of(&message))
            .or_else(|| crate::input::TimeOutOfRange::code_of(&message))
            .unwrap_or(if message.starts_with("missing field") {
                "missing_field"
            } else if message.starts_with("unknown field") {
                "unknown_field"
            } else {
                "invalid_field"
            });
        let field = if field.is_empty() { unknown_field_name(&message).unwrap_or_default() } else { field };
        let error = ApiError::invalid(&field, code, format!("{field}: {message}"));
        if field.is_empty() { ApiError { field: None, ..error } } else { error }
    })?;
    deserializer.end().map_err(|err| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", err.to_string()))?;
    Ok(value)
}

fn missing_field_name(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_string())
}

fn unknown_field_name(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest.split('`').next()?.to_string())
}

/// Serde loses the error type of a custom deserializer; the message is all that is left.
fn credits_error_code(message: &str) -> Option<&'static str> {
    [
        CreditsError::NotANumber,
        CreditsError::Negative,
        CreditsError::Zero,
        CreditsError::TooPrecise,
        CreditsError::TooLarge,
    ]
    .into_iter()
    .find(|err| message.starts_with(&err.to_string()))
    .map(|err| err.code())
}

/// Longest Idempotency-Key accepted.
pub const IDEMPOTENCY_KEY_CHARS_MAX: usize = 200;

/// The `Idempotency-Key` request header, if present and well-formed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(pub String);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let bad = || {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_idempotency_key",
                format!("Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_CHARS_MAX} visible ASCII characters"),
            )
            .with_field("Idempotency-Key")
        };
        let Some(value) = parts.headers.get("idempotency-key") else {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "missing_idempotency_key",
                "this request needs an Idempotency-Key header",
            )
            .with_field("Idempotency-Key"));
        };
        let text = value.to_str().map_err(|_| bad())?.trim();
        if text.is_empty() || text.len() > IDEMPOTENCY_KEY_CHARS_MAX || !text.chars().all(|c| c.is_ascii_graphic()) {
            return Err(bad());
        }
        Ok(IdempotencyKey(text.to_string()))
    }
}

impl<S: Send + Sync> axum::extract::OptionalFromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Option<Self>, Self::Rejection> {
        if parts.headers.contains_key("idempotency-key") {
            <IdempotencyKey as FromRequestParts<S>>::from_request_parts(parts, state).await.map(Some)
        } else {
            Ok(None)
        }
    }
}
