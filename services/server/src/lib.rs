//! capex-server
