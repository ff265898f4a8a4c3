//! Query-string, path and raw-body extractors whose rejections are API problems, so no
//! request error leaves the server as axum's `text/plain`.
//!
//! The status rules, the same on every route:
//! - a query parameter that does not parse, or whose value is out of range, is a 400
//!   (`invalid_query`, `invalid_limit`, ...) naming the parameter in `field`;
//! - a path id that does not parse names no resource: the same 404 `not_found` as an id
//!   that does not exist, naming the path parameter in `field`;
//! - a header that is missing or malformed (`Idempotency-Key`) is a 400;
//! - a JSON body that is not JSON is a 400 `invalid_json`; one that is JSON but does not
//!   fit the request type, or whose values the server refuses, is a 422 naming the field;
//!   a body without `Content-Type: application/json` is a 415; a body over the limit a 413.

use axum::body::Bytes;
use axum::extract::path::ErrorKind;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Query-string extractor: like `axum::extract::Query`, but a query that does not parse is
/// a 400 `invalid_query` problem naming the parameter.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parse_query(parts.uri.query().unwrap_or("")).map(ApiQuery)
    }
}

/// Parses a query string into `T`, mapping failures to a 400 naming the parameter.
pub fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    let deserializer = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let path = err.path().to_string();
        let message = err.into_inner().to_string();
        let field = if path == "." { quoted_name(&message) } else { Some(path) };
        let detail = match &field {
            Some(field) => format!("query parameter {field}: {message}"),
            None => format!("query string: {message}"),
        };
        let error = ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", detail);
        match field {
            Some(field) => error.with_field(field),
            None => error,
        }
    })
}

/// The name serde quotes in "missing field `x`" or "duplicate field `x`".
fn quoted_name(message: &str) -> Option<String> {
    let (_, rest) = message.split_once('`')?;
    Some(rest.split('`').next()?.to_string())
}

/// Path extractor: like `axum::extract::Path`, but a path parameter that does not parse
/// (a malformed id) is the 404 `not_found` problem an unknown id gets, naming the parameter.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(path_problem(rejection)),
        }
    }
}

fn path_problem(rejection: PathRejection) -> ApiError {
    let PathRejection::FailedToDeserializePathParams(err) = rejection else {
        // Only a route without the parameters it extracts gets here: a bug, not a request error.
        return ApiError::internal(rejection.body_text());
    };
    let key = match err.kind() {
        ErrorKind::ParseErrorAtKey { key, .. }
        | ErrorKind::InvalidUtf8InPathParam { key }
        | ErrorKind::DeserializeError { key, .. } => Some(key.clone()),
        _ => None,
    };
    let detail = match &key {
        Some(key) => format!("no resource has this {key}: it is not a well-formed id"),
        None => "no resource has this path: it is not a well-formed id".to_string(),
    };
    let error = ApiError::new(StatusCode::NOT_FOUND, "not_found", detail);
    match key {
        Some(key) => error.with_field(key),
        None => error,
    }
}

/// Raw body extractor (for bodies that are signed as bytes): like `Bytes`, but a body over
/// the limit is a 413 `body_too_large` problem and an unreadable one a 400 problem.
#[derive(Debug, Clone, Default)]
pub struct ApiBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for ApiBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Bytes::from_request(req, state).await.map(ApiBytes).map_err(|rejection| {
            let status = rejection.status();
            let code = if status == StatusCode::PAYLOAD_TOO_LARGE { "body_too_large" } else { "body_unreadable" };
            ApiError::new(status, code, rejection.body_text())
        })
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    struct Q {
        #[allow(dead_code)]
        limit: Option<i64>,
    }

    #[test]
    fn a_bad_query_value_is_a_400_naming_the_parameter() {
        let err = parse_query::<Q>("limit=abc").unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert_eq!(err.code, "invalid_query");
        assert_eq!(err.field.as_deref(), Some("limit"));
    }

    #[test]
    fn a_repeated_parameter_is_a_400_naming_it() {
        let err = parse_query::<Q>("limit=1&limit=2").unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert_eq!(err.field.as_deref(), Some("limit"));
    }

    #[test]
    fn a_good_query_parses() {
        assert_eq!(parse_query::<Q>("limit=5&other=x").unwrap().limit, Some(5));
        assert_eq!(parse_query::<Q>("").unwrap().limit, None);
    }
}
