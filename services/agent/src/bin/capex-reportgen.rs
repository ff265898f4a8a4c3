//! Load generator for report ingestion: registers N hosts on a running exchange, then
//! fires pre-signed reports over HTTP from many concurrent clients and prints reports/s
//! next to the single-signature `verify_strict` rate measured in the same run.
//!
//! `capex-reportgen --exchange http://127.0.0.1:8080 --hosts 200 --reports 60000 --concurrency 128`

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use capex_core::report::{REPORT_DOMAIN, encode_public_key, verify_many_strict, verify_strict};
use capex_core::{
    GpuBackend, GpuSample, INVENTORY_DOMAIN, InventoryGpu, InventoryPayload, ReportPayload, SignedEnvelope,
};
use chrono::Utc;
use clap::Parser;
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use serde_json::{Value, json};
use uuid::Uuid;

#[derive(Parser)]
#[command(name = "capex-reportgen", about = "Report ingestion load generator")]
struct Args {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    exchange: String,
    /// Hosts to register.
    #[arg(long, default_value_t = 200)]
    hosts: usize,
    /// Reports to send in all.
    #[arg(long, default_value_t = 50_000)]
    reports: usize,
    /// Concurrent HTTP clients (each sends one host's reports in order).
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    #[arg(long, default_value_t = 2)]
    gpus_per_host: usize,
}

/// One prepared request: the host and the JSON envelope bytes.
type SignedReport = (Uuid, Vec<u8>);

struct Host {
    host_id: Uuid,
    key: SigningKey,
    gpu_uuids: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.hosts >= 1 && args.concurrency >= 1 && args.reports >= args.hosts, "bad sizes");
    let base = args.exchange.trim_end_matches('/').to_string();
    let client = reqwest::Client::builder().pool_max_idle_per_host(args.concurrency).build()?;

    // A provider account for the hosts.
    let email = format!("reportgen-{}@example.test", Uuid::now_v7().simple());
    let password = "reportgen password 1";
    let res = client
        .post(format!("{base}/api/v1/auth/register"))
        .json(&json!({"email": email, "password": password, "roles": ["provider"]}))
        .send()
        .await?;
    anyhow::ensure!(res.status().is_success(), "register user: {}", res.text().await?);
    let login: Value = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await?
        .json()
        .await?;
    let token = login["token"].as_str().context("login token")?.to_string();

    let started = Instant::now();
    let mut hosts = Vec::with_capacity(args.hosts);
    for i in 0..args.hosts {
        let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
        let gpu_uuids: Vec<String> = (0..args.gpus_per_host).map(|_| format!("GPU-{}", Uuid::new_v4())).collect();
        let inventory = InventoryPayload {
            public_key: encode_public_key(&key.verifying_key()),
            name: format!("loadgen-{i}"),
            created_at: Utc::now(),
            interval_s: 10,
            backend: GpuBackend::Simulated,
            driver_version: Some("simulated".into()),
            cuda_version: Some("12.4".into()),
            gpus: gpu_uuids
                .iter()
                .enumerate()
                .map(|(index, uuid)| InventoryGpu {
                    index: index as u32,
                    uuid: uuid.clone(),
                    name: "NVIDIA H100 80GB HBM3".into(),
                    memory_total_mib: 81_559,
                    pci_bus_id: None,
                })
                .collect(),
        };
        let envelope = SignedEnvelope::seal_json(INVENTORY_DOMAIN, &key, &inventory);
        let res = client.post(format!("{base}/api/v1/hosts")).bearer_auth(&token).json(&envelope).send().await?;
        anyhow::ensure!(res.status().is_success(), "register host: {}", res.text().await?);
        let view: Value = res.json().await?;
        let host_id = view["host_id"].as_str().context("host_id")?.parse()?;
        hosts.push(Host { host_id, key, gpu_uuids });
    }
    eprintln!("registered {} hosts in {:.1} s", hosts.len(), started.elapsed().as_secs_f64());

    // Sign every report up front so signing is not part of the measured rate.
    let per_host = args.reports / args.hosts;
    let started = Instant::now();
    let now = Utc::now();
    let mut bodies: Vec<Vec<SignedReport>> = Vec::with_capacity(hosts.len());
    let mut verify_sample: Vec<(VerifyingKey, Vec<u8>, Signature)> = Vec::new();
    for host in &hosts {
        let mut list = Vec::with_capacity(per_host);
        for seq in 0..per_host as u64 {
            let report = ReportPayload {
                host_id: host.host_id,
                seq,
                sent_at: now,
                measured_at: now,
                interval_s: 10,
                backend: GpuBackend::Simulated,
                gpus: host
                    .gpu_uuids
                    .iter()
                    .map(|uuid| GpuSample {
                        uuid: uuid.clone(),
                        name: "NVIDIA H100 80GB HBM3".into(),
                        memory_total_mib: 81_559,
                        memory_used_mib: 1024,
                        utilization_pct: 50,
                        power_mw: 350_000,
                        energy_mj: seq * 3_500_000,
                        temperature_c: 55,
                        processes: vec![],
                    })
                    .collect(),
                leases: None,
            };
            let envelope = SignedEnvelope::seal_json(REPORT_DOMAIN, &host.key, &report);
            if verify_sample.len() < 20_000 {
                let decoded = envelope.decode()?;
                verify_sample.push((host.key.verifying_key(), decoded.payload, decoded.signature));
            }
            list.push((host.host_id, serde_json::to_vec(&envelope)?));
        }
        bodies.push(list);
    }
    let total = per_host * hosts.len();
    eprintln!("signed {total} reports in {:.1} s", started.elapsed().as_secs_f64());

    // The raw single-signature rate on one core, same machine, same moment.
    let started = Instant::now();
    for (key, payload, signature) in &verify_sample {
        verify_strict(REPORT_DOMAIN, key, payload, signature).expect("valid");
    }
    let strict_rate = verify_sample.len() as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    for chunk in verify_sample.chunks(512) {
        let items: Vec<(&VerifyingKey, &[u8], &Signature)> =
            chunk.iter().map(|(k, p, s)| (k, p.as_slice(), s)).collect();
        assert!(verify_many_strict(REPORT_DOMAIN, &items).iter().all(|ok| *ok));
    }
    let batch_rate = verify_sample.len() as f64 / started.elapsed().as_secs_f64();

    // Fire: each client owns some hosts and sends their reports in sequence order.
    let mut lanes: Vec<Vec<Vec<SignedReport>>> = (0..args.concurrency).map(|_| Vec::new()).collect();
    for (i, list) in bodies.into_iter().enumerate() {
        lanes[i % args.concurrency].push(list);
    }
    let client = Arc::new(client);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for lane in lanes.into_iter().filter(|l| !l.is_empty()) {
        let client = client.clone();
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
            let rounds = lane.iter().map(Vec::len).max().unwrap_or(0);
            let mut lane: Vec<std::vec::IntoIter<SignedReport>> = lane.into_iter().map(Vec::into_iter).collect();
            for _ in 0..rounds {
                for reports in lane.iter_mut() {
                    let Some((host_id, body)) = reports.next() else { continue };
                    let status = match client
                        .post(format!("{base}/api/v1/hosts/{host_id}/reports"))
                        .header("content-type", "application/json")
                        .body(body)
                        .timeout(Duration::from_secs(30))
                        .send()
                        .await
                    {
                        Ok(res) => {
                            let status = res.status().as_u16();
                            let _ = res.bytes().await;
                            status
                        }
                        Err(_) => 0,
                    };
                    *statuses.entry(status).or_insert(0) += 1;
                }
            }
            statuses
        }));
    }
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for task in tasks {
        for (status, n) in task.await? {
            *statuses.entry(status).or_insert(0) += n;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let accepted = statuses.get(&200).copied().unwrap_or(0);
    println!("hosts: {}  reports sent: {total}  concurrency: {}", hosts.len(), args.concurrency);
    println!("statuses: {statuses:?}");
    println!(
        "ingested: {accepted} accepted in {elapsed:.2} s = {:.0} reports/s (HTTP + verify + Postgres)",
        accepted as f64 / elapsed
    );
    println!("verify_strict, one core, this run: {strict_rate:.0} signatures/s");
    println!("batch verify (verify_many_strict, 512), one core, this run: {batch_rate:.0} signatures/s");
    anyhow::ensure!(accepted == total, "not every report was accepted");
    Ok(())
}
