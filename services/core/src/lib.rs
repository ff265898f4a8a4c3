//! Types shared by every Capex crate. Constructors refuse bad input, so code that holds
//! one of these values never has to check it again.

pub mod challenge;
pub mod credits;
pub mod gpu_class;
pub mod report;
pub mod role;

pub use credits::{Credits, CreditsError};
pub use gpu_class::GpuClass;
pub use report::{
    GpuProcess, GpuSample, INVENTORY_DOMAIN, InventoryGpu, InventoryPayload, LeaseReport, REPORT_DOMAIN, ReportPayload,
    SignedEnvelope,
};
pub use role::Role;
