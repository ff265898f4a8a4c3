//! Why a report was refused: one code per rule of DESIGN section 5, each counted.

use axum::http::StatusCode;

use crate::error::ApiError;

/// Every way a report can be refused. `code()` is stable API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Refusal {
    /// The body is over `REPORT_BODY_BYTES_MAX`.
    TooLarge,
    /// The body is not a `{payload, signature}` JSON object.
    InvalidEnvelope,
    /// `payload` or `signature` is not base64 (or the signature is not 64 bytes).
    InvalidBase64,
    /// No host has this id.
    UnknownHost,
    /// The host exists but is disabled.
    HostInactive,
    /// The signature does not verify under the host's key.
    InvalidSignature,
    /// The verified bytes are not a valid report payload.
    InvalidPayload,
    /// The payload names another host than the URL.
    HostMismatch,
    /// The sequence number is not above the last accepted one (and the bytes differ).
    ReplayedSequence,
    /// `sent_at` is ahead of the server clock by more than the skew window.
    SentAtFuture,
    /// `sent_at` is behind the server clock by more than the skew window.
    SentAtStale,
    /// A GPU in the report is not registered to this host.
    ForeignGpu,
    /// A GPU's energy counter is lower than in the last accepted report.
    EnergyWentBackwards,
    /// The report names another GPU backend than the host's inventory did.
    BackendMismatch,
}

impl Refusal {
    pub(crate) fn code(self) -> &'static str {
        match self {
            Refusal::TooLarge => "report_too_large",
            Refusal::InvalidEnvelope => "invalid_envelope",
            Refusal::InvalidBase64 => "invalid_base64",
            Refusal::UnknownHost => "unknown_host",
            Refusal::HostInactive => "host_inactive",
            Refusal::InvalidSignature => "invalid_signature",
            Refusal::InvalidPayload => "invalid_payload",
            Refusal::HostMismatch => "host_mismatch",
            Refusal::ReplayedSequence => "replayed_sequence",
            Refusal::SentAtFuture => "sent_at_future",
            Refusal::SentAtStale => "sent_at_stale",
            Refusal::ForeignGpu => "foreign_gpu",
            Refusal::EnergyWentBackwards => "energy_went_backwards",
            Refusal::BackendMismatch => "backend_mismatch",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Refusal::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::InvalidEnvelope | Refusal::InvalidBase64 => StatusCode::BAD_REQUEST,
            Refusal::UnknownHost => StatusCode::NOT_FOUND,
            Refusal::HostInactive => StatusCode::FORBIDDEN,
            Refusal::InvalidSignature => StatusCode::UNAUTHORIZED,
            Refusal::ReplayedSequence => StatusCode::CONFLICT,
            Refusal::InvalidPayload
            | Refusal::HostMismatch
            | Refusal::SentAtFuture
            | Refusal::SentAtStale
            | Refusal::ForeignGpu
            | Refusal::EnergyWentBackwards
            | Refusal::BackendMismatch => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    /// The problem response, with a detail for the agent's log.
    pub(crate) fn into_error(self, detail: impl Into<String>) -> ApiError {
        metrics::counter!("capex_report_refusals_total", "code" => self.code()).increment(1);
        ApiError::new(self.status(), self.code(), detail)
    }
}
