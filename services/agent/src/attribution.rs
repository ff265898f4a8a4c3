//! Which compute processes on a GPU belong to a lease.
//!
//! NVML reports only pids. Both job runtimes put `CAPEX_LEASE_ID` in the job's
//! environment (the process runtime on the process, Docker inside the container, whose
//! processes the host's `/proc` shows with their own environment), and a child inherits it.
//! A process counts as the lease's only when that lease is running here AND the GPU is one
//! of the lease's GPUs: a job that reaches a GPU it was not given stays foreign there, so
//! that GPU is not sold as free.

use std::collections::HashMap;

use capex_core::GpuSample;
use uuid::Uuid;

/// The environment variable both runtimes set to the job's lease id.
pub const LEASE_ENV: &str = "CAPEX_LEASE_ID";

/// Fills in `lease_id` of every process that `lease_of_pid` ties to a running lease holding
/// that GPU. Processes that already carry a lease id (the simulated backend's) are left as
/// they are.
pub fn attribute(
    samples: &mut [GpuSample],
    running: &HashMap<Uuid, Vec<String>>,
    mut lease_of_pid: impl FnMut(u32) -> Option<Uuid>,
) {
    for sample in samples {
        for process in sample.processes.iter_mut().filter(|p| p.lease_id.is_none()) {
            let Some(lease) = lease_of_pid(process.pid) else { continue };
            if running.get(&lease).is_some_and(|gpus| gpus.contains(&sample.uuid)) {
                process.lease_id = Some(lease);
            }
        }
    }
}

/// The lease id in a process's environment, read from `/proc/<pid>/environ`. `None` when
/// the process is gone, unreadable (another user's, without root) or has no lease id.
pub fn lease_in_environment(pid: u32) -> Option<Uuid> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    lease_in_environ_bytes(&environ)
}

fn lease_in_environ_bytes(environ: &[u8]) -> Option<Uuid> {
    let prefix = format!("{LEASE_ENV}=");
    environ
        .split(|b| *b == 0)
        .find_map(|entry| entry.strip_prefix(prefix.as_bytes()))
        .and_then(|value| std::str::from_utf8(value).ok()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use capex_core::GpuProcess;

    fn gpu(uuid: &str, pids: &[u32]) -> GpuSample {
        GpuSample {
            uuid: uuid.into(),
            name: "NVIDIA H100 80GB HBM3".into(),
            memory_total_mib: 81_559,
            memory_used_mib: 0,
            utilization_pct: 0,
            power_mw: 70_000,
            energy_mj: 0,
            temperature_c: 30,
            processes: pids.iter().map(|&pid| GpuProcess { pid, used_memory_mib: 10, lease_id: None }).collect(),
        }
    }

    #[test]
    fn a_process_is_the_lease_s_only_on_the_lease_s_gpus() {
        let lease = Uuid::now_v7();
        let other = Uuid::now_v7();
        let running = HashMap::from([(lease, vec!["GPU-a".to_string()])]);
        let mut samples = vec![gpu("GPU-a", &[10, 11, 12]), gpu("GPU-b", &[10])];
        // 10 is the lease's job; 11 claims a lease that is not running here; 12 has none.
        attribute(&mut samples, &running, |pid| match pid {
            10 => Some(lease),
            11 => Some(other),
            _ => None,
        });
        let leases = |s: &GpuSample| s.processes.iter().map(|p| p.lease_id).collect::<Vec<_>>();
        assert_eq!(leases(&samples[0]), vec![Some(lease), None, None]);
        // The same job on a GPU it was not given stays foreign there.
        assert_eq!(leases(&samples[1]), vec![None]);
    }

    #[test]
    fn a_lease_id_already_known_is_kept() {
        let simulated = Uuid::now_v7();
        let mut samples = vec![gpu("GPU-a", &[10])];
        samples[0].processes[0].lease_id = Some(simulated);
        attribute(&mut samples, &HashMap::new(), |_| None);
        assert_eq!(samples[0].processes[0].lease_id, Some(simulated));
    }

    #[test]
    fn the_lease_id_is_read_from_a_real_process_environment() {
        let lease = Uuid::now_v7();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env(LEASE_ENV, lease.to_string())
            .spawn()
            .expect("spawn sleep");
        // Until the child has exec'd (and while it does), /proc shows the parent's
        // environment or none: look again for a while.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let found = loop {
            let found = lease_in_environment(child.id());
            if found.is_some() || std::time::Instant::now() > deadline {
                break found;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        let mine = lease_in_environment(std::process::id());
        child.kill().expect("kill");
        child.wait().expect("wait");
        assert_eq!(found, Some(lease));
        assert_eq!(mine, std::env::var(LEASE_ENV).ok().and_then(|v| v.parse().ok()));
        assert_eq!(lease_in_environment(u32::MAX), None, "no such process");
    }

    #[test]
    fn environ_parsing_takes_only_the_exact_variable() {
        let lease = Uuid::now_v7();
        let bytes = format!("X_CAPEX_LEASE_ID=nope\0CAPEX_LEASE_ID_OLD=nope\0CAPEX_LEASE_ID={lease}\0PATH=/bin\0");
        assert_eq!(lease_in_environ_bytes(bytes.as_bytes()), Some(lease));
        assert_eq!(lease_in_environ_bytes(b"CAPEX_LEASE_ID=not-a-uuid\0"), None);
        assert_eq!(lease_in_environ_bytes(b""), None);
    }
}
