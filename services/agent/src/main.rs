use anyhow::Context;
use capex_agent::config::{AgentConfig, Overrides};
use capex_agent::gpu::open_probe;
use capex_agent::{init_logging, key, reporter};
use capex_core::GpuClass;
use capex_core::report::encode_public_key;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "capex-agent", version, about = "Capex provider agent: GPU probe, host key, signed usage reports")]
struct Cli {
    #[command(flatten)]
    overrides: Overrides,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the host key (mode 0600; never overwrites) and print its public key.
    Init,
    /// Register this host and its GPUs with the exchange (signed inventory).
    Register {
        /// Exchange base URL, e.g. https://capex.example.com
        #[arg(long, env = "CAPEX_AGENT_EXCHANGE")]
        exchange: Option<String>,
        /// A provider API key (capex_...). Used only here; reports are signed with the host key.
        #[arg(long, env = "CAPEX_AGENT_API_KEY", hide_env_values = true)]
        api_key: String,
    },
    /// Send a signed report every interval until stopped.
    Run {
        /// Exchange base URL (default: the one registered with).
        #[arg(long, env = "CAPEX_AGENT_EXCHANGE")]
        exchange: Option<String>,
    },
    /// Print each GPU's confidential-computing state and, where CC is on, what its
    /// attestation report and certificate chain look like (fetched for a random nonce and
    /// checked with the exchange's verifier). Needs NVML.
    CcProbe {
        /// JSON (including the evidence, base64) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// On a host with NVIDIA GPUs: run the challenge kernel on each GPU, check it against
    /// the CPU reference, print its time and throughput (see scripts/gpu-check).
    GpuCheck {
        /// Matrix sizes to run (default: the simulated n and the class's n).
        #[arg(long, value_delimiter = ',')]
        n: Option<Vec<u32>>,
    },
    /// Print what the GPU backend sees.
    Probe {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = AgentConfig::load(&cli.overrides)?;
    init_logging(config.log_format);
    match cli.command {
        Command::Init => {
            let key = key::create_key(&config.key_path())?;
            println!("{}", encode_public_key(&key.verifying_key()));
            eprintln!("host key written to {} (mode 600)", config.key_path().display());
            // Probe once so a missing driver shows up now, not at `register`.
            match open_probe(config.backend, &config.simulated_gpus, key.verifying_key().as_bytes())
                .and_then(|mut probe| Ok((probe.backend(), probe.inventory()?)))
            {
                Ok((backend, inventory)) => {
                    eprintln!("{backend} backend sees {} GPU(s):", inventory.gpus.len());
                    for gpu in &inventory.gpus {
                        let class = GpuClass::from_nvml(&gpu.name, gpu.memory_total_mib);
                        eprintln!("  {} {} {} ({class})", gpu.index, gpu.uuid, gpu.name);
                    }
                }
                Err(err) => eprintln!("warning: GPU probe failed: {err}"),
            }
            Ok(())
        }
        Command::Register { exchange, api_key } => {
            let exchange = exchange.or(config.exchange_url.clone()).context("--exchange URL is required")?;
            let registration = reporter::register(&config, &exchange, &api_key).await?;
            println!("{}", registration.host_id);
            Ok(())
        }
        Command::Run { exchange } => reporter::run(&config, exchange, shutdown_signal()).await,
        Command::Probe { json } => probe(&config, json),
        Command::CcProbe { json } => cc_probe(json),
        Command::GpuCheck { n } => {
            let ok = tokio::task::spawn_blocking(move || capex_agent::challenge::check::run(n)).await??;
            anyhow::ensure!(ok, "gpu-check: a kernel result differs from the CPU reference");
            Ok(())
        }
    }
}

fn probe(config: &AgentConfig, json: bool) -> anyhow::Result<()> {
    let mut probe = open_probe(config.backend, &config.simulated_gpus, &reporter::probe_seed(config))?;
    let inventory = probe.inventory()?;
    let samples = probe.sample()?;
    if json {
        let out = serde_json::json!({"backend": probe.backend(), "inventory": inventory, "samples": samples});
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "backend: {}   driver: {}   cuda: {}",
        probe.backend(),
        inventory.driver_version.as_deref().unwrap_or("-"),
        inventory.cuda_version.as_deref().unwrap_or("-")
    );
    println!(
        "{:>3}  {:<42}  {:<28}  {:<16}  {:>11}  {:>5}  {:>8}  {:>5}  {:>5}",
        "IDX", "UUID", "NAME", "CLASS", "MEM MiB", "UTIL%", "POWER W", "TEMP", "PROCS"
    );
    for (gpu, sample) in inventory.gpus.iter().zip(&samples) {
        println!(
            "{:>3}  {:<42}  {:<28}  {:<16}  {:>5}/{:<5}  {:>5}  {:>8.1}  {:>5}  {:>5}",
            gpu.index,
            gpu.uuid,
            gpu.name,
            GpuClass::from_nvml(&gpu.name, gpu.memory_total_mib).as_str(),
            sample.memory_used_mib,
            sample.memory_total_mib,
            sample.utilization_pct,
            sample.power_mw as f64 / 1000.0,
            sample.temperature_c,
            sample.processes.len()
        );
    }
    Ok(())
}

fn cc_probe(json: bool) -> anyhow::Result<()> {
    let nvml = nvml_wrapper::Nvml::init().map_err(|e| anyhow::anyhow!("NVML is not available: {e}"))?;
    let gpus = capex_agent::gpu::cc::cc_probe_report(&nvml)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&gpus)?);
        return Ok(());
    }
    let flag = |v: Option<bool>| match v {
        Some(true) => "on",
        Some(false) => "off",
        None => "unknown",
    };
    for gpu in &gpus {
        let s = &gpu.state;
        println!("GPU {} {} {}", gpu.index, gpu.uuid, gpu.name);
        println!(
            "  cc mode: {}   dev tools: {}   protected pcie: {}   ready: {}   capabilities: {}",
            flag(s.cc_enabled),
            flag(s.dev_tools_mode),
            flag(s.protected_pcie),
            flag(s.gpus_ready),
            s.capabilities.as_deref().unwrap_or("unknown")
        );
        if let Some(error) = &s.error {
            println!("  state error: {error}");
        }
        if let Some(reason) = &gpu.unavailable {
            println!("  evidence: unavailable: {reason}");
        }
        if let Some(summary) = &gpu.summary {
            println!(
                "  report: {} bytes, SPDM {:#04x}, {} measurements, request nonce {} ({})",
                summary.report_bytes,
                summary.spdm_version,
                summary.measurement_count,
                summary.request_nonce,
                if gpu.nonce_matches == Some(true) { "matches" } else { "DOES NOT MATCH" }
            );
            println!(
                "  driver {}   vbios {}   fwid {}",
                summary.driver_version.as_deref().unwrap_or("-"),
                summary.vbios_version.as_deref().unwrap_or("-"),
                summary.fwid.as_deref().unwrap_or("-")
            );
            for (i, subject) in summary.chain_subjects.iter().enumerate() {
                println!("  chain[{i}]: {subject}");
            }
        }
        if let Some(verdict) = &gpu.verdict {
            println!("  verdict: {verdict}");
        }
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM (systemd's stop).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
