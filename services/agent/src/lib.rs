//! capex-agent: runs on a provider's GPU host. It owns the host key, probes the GPUs
//! (NVML or simulated), registers the host with a signed inventory and sends a signed
//! usage report every interval, spooling to disk whenever the exchange is unreachable.

pub mod attestation;
pub mod attribution;
pub mod challenge;
pub mod config;
pub mod energy;
pub mod exchange;
pub mod gpu;
pub mod jobs;
pub mod key;
pub mod reporter;
pub mod spool;

/// Sets up `tracing` to stderr. `RUST_LOG` filters (default `info`).
pub fn init_logging(format: config::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_writer(std::io::stderr);
    let _ = match format {
        config::LogFormat::Json => builder.json().try_init(),
        config::LogFormat::Pretty => builder.try_init(),
    };
}
