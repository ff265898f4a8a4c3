use std::path::PathBuf;

use tokio::process::Command;

use crate::job::{JobSpec, RuntimeConfig, RuntimeError};

/// PATH given to jobs that do not set their own.
pub(crate) const JOB_DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The job's working directory: fresh for every lease.
pub(crate) fn work_dir(spec: &JobSpec, config: &RuntimeConfig) -> PathBuf {
    config.work_root.join(spec.lease_id.to_string())
}

/// A plain process with only the leased GPUs visible and only the job's environment
/// (plus PATH, HOME and the GPU variables).
pub(crate) fn command(spec: &JobSpec, config: &RuntimeConfig) -> Result<Command, RuntimeError> {
    let dir = work_dir(spec, config);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(RuntimeError::WorkDir)?;
    }
    std::fs::create_dir_all(&dir).map_err(RuntimeError::WorkDir)?;
    let visible = spec.gpu_uuids.join(",");
    let mut command = match &config.run_as_user {
        Some(user) => {
            let status =
                std::process::Command::new("chown").arg(user).arg(&dir).status().map_err(RuntimeError::WorkDir)?;
            if !status.success() {
                return Err(RuntimeError::WorkDir(std::io::Error::other(format!("chown {user} failed"))));
            }
            let mut command = Command::new("setpriv");
            command.args(["--reuid", user, "--regid", user, "--init-groups", "--"]).args(&spec.command);
            command
        }
        None => {
            let mut command = Command::new(&spec.command[0]);
            command.args(&spec.command[1..]);
            command
        }
    };
    command
        .env_clear()
        .env("PATH", JOB_DEFAULT_PATH)
        .env("HOME", &dir)
        .envs(&spec.env)
        .env("CUDA_VISIBLE_DEVICES", &visible)
        .env("NVIDIA_VISIBLE_DEVICES", &visible)
        .env("CAPEX_LEASE_ID", spec.lease_id.to_string())
        .current_dir(&dir);
    Ok(command)
}
