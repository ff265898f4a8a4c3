use tokio::process::Command;
use uuid::Uuid;

use crate::job::{JobSpec, RuntimeConfig};

pub(crate) fn container_name(lease_id: Uuid) -> String {
    format!("capex-{lease_id}")
}

/// The arguments of `docker run` for a job: only the leased GPUs, only the job's
/// environment, removed when it ends.
pub fn docker_run_args(spec: &JobSpec, default_image: &str) -> Vec<String> {
    let mut args = vec![
        "run".to_string(),
        "--rm".to_string(),
        "--name".to_string(),
        container_name(spec.lease_id),
        "--gpus".to_string(),
        // The quotes are part of the value: docker splits --gpus on commas otherwise.
        format!("\"device={}\"", spec.gpu_uuids.join(",")),
        "--env".to_string(),
        format!("CAPEX_LEASE_ID={}", spec.lease_id),
    ];
    for (key, value) in &spec.env {
        args.push("--env".to_string());
        args.push(format!("{key}={value}"));
    }
    args.push(spec.image.clone().unwrap_or_else(|| default_image.to_string()));
    args.extend(spec.command.iter().cloned());
    args
}

pub(crate) fn command(spec: &JobSpec, config: &RuntimeConfig) -> Command {
    let mut command = Command::new(&config.docker_binary);
    command.args(docker_run_args(spec, &config.default_image));
    command
}
