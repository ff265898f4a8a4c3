//! Types shared by every Capex crate. Constructors refuse bad input, so code that holds
//! one of these values never has to check it again.

pub mod credits;
pub mod role;

pub use credits::{Credits, CreditsError};
pub use role::Role;
