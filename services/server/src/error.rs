//! The one API error type. Every failure a client can cause becomes an RFC 9457
//! `application/problem+json` response with a stable `code` and, for validation errors,
//! the offending `field`. Internal errors are logged with their cause and shown to the
//! client only as an opaque 500.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use capex_core::CreditsError;
use capex_ledger::LedgerError;
use serde::Serialize;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    pub field: Option<String>,
}

/// The problem document, as documented in the OpenAPI spec.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable machine-readable error code.
    pub code: String,
    /// The request field the error is about, as a JSON path (`amount`, `job.command[0]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        ApiError { status, code, detail: detail.into(), field: None }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// A request field failed validation.
    pub fn invalid(field: &str, code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail).with_field(field)
    }

    /// An amount field was refused by the `Credits` parser.
    pub fn credits(field: &str, err: CreditsError) -> Self {
        Self::invalid(field, err.code(), format!("{field} {err}"))
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
    }

    /// An unexpected failure: the cause is logged here and never sent to the client.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal server error")
    }

    pub fn problem(&self) -> Problem {
        Problem {
            type_: format!("https://capex.dev/problems/{}", self.code.replace('_', "-")),
            title: self.status.canonical_reason().unwrap_or("Error").to_string(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            code: self.code.to_string(),
            field: self.field.clone(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        metrics::counter!("capex_api_errors_total", "code" => self.code).increment(1);
        let mut response = (self.status, axum::Json(self.problem())).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        response
    }
}

impl ApiError {
    /// A transaction lost a deadlock or serialization race as many times as the ledger
    /// retries it ([`capex_ledger::retry`]). Nothing was written; the request may be sent
    /// again as it is.
    pub fn transaction_conflict(cause: impl std::fmt::Display) -> Self {
        tracing::warn!(error = %cause, "transaction lost a race");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            TRANSACTION_CONFLICT,
            "the request met concurrent changes and was not applied; retry it",
        )
    }
}

/// The code of [`ApiError::transaction_conflict`]: what [`Retryable`] looks for.
pub const TRANSACTION_CONFLICT: &str = "transaction_conflict";

impl capex_ledger::Retryable for ApiError {
    fn is_retryable(&self) -> bool {
        self.code == TRANSACTION_CONFLICT
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.status, self.code, self.detail)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        if capex_ledger::lost_race(&err) { ApiError::transaction_conflict(err) } else { ApiError::internal(err) }
    }
}

impl From<LedgerError> for ApiError {
    fn from(err: LedgerError) -> Self {
        match err {
            LedgerError::InsufficientFunds { .. } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "insufficient_funds",
                "not enough available credits for this request",
            )
            .with_field("amount"),
            LedgerError::IdempotencyConflict { .. } => ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_key_reused",
                "this Idempotency-Key was already used for a different request",
            ),
            LedgerError::SameAccount => ApiError::invalid("to_user", "same_account", "cannot transfer to yourself"),
            LedgerError::NonPositiveAmount => {
                ApiError::invalid("amount", "invalid_amount", "the amount must be greater than zero")
            }
            LedgerError::UnknownAccount(id) => ApiError::internal(format!("unknown ledger account {id}")),
            LedgerError::Database(db) => db.into(),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
