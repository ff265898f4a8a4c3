//! Provider hosts: registration with a signed inventory, signed usage reports (verified
//! and stored in batches by the ingester), host views and telemetry, liveness and the
//! attested capacity the order book sells.

pub mod capacity;
pub mod gpu_state;
pub mod ingest;
pub(crate) mod refusal;
pub mod register;
pub mod reports;
pub mod unattributed;
pub mod uptime;
pub mod views;

use axum::Router;
use axum::routing::{get, post};

pub use capacity::{Capacity, ClassCapacity, LIVENESS_INTERVALS};
pub use gpu_state::GpuState;
pub use ingest::ReportIngest;
pub use reports::{REPORT_BODY_BYTES_MAX, ReportReceipt};
pub use views::{GpuView, HostPage, HostView, Telemetry};

pub fn router() -> Router<crate::AppState> {
    Router::new()
        .route("/api/v1/hosts", post(register::register_host).get(views::list_hosts))
        .route("/api/v1/hosts/{host_id}", get(views::get_host))
        .route("/api/v1/hosts/{host_id}/reports", post(reports::post_report).get(views::list_reports))
        .route("/api/v1/hosts/{host_id}/telemetry", get(views::get_telemetry))
        .route("/api/v1/capacity", get(capacity::get_capacity))
        .route("/api/v1/operator/report-refusals", get(unattributed::list_unattributed))
}
