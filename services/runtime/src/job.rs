use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// What to run, from the lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub lease_id: Uuid,
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub image: Option<String>,
    /// The leased GPUs; the job sees these and no others.
    pub gpu_uuids: Vec<String>,
    /// The job is stopped when this much time has passed since it started.
    pub max_duration: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    Docker,
    Process,
}

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub kind: RuntimeKind,
    /// Each job gets a fresh directory `<work_root>/<lease_id>` (process runtime).
    pub work_root: PathBuf,
    /// Process runtime: run jobs as this unprivileged user (needs root and `setpriv`).
    pub run_as_user: Option<String>,
    /// Time between SIGTERM and SIGKILL when a job is stopped.
    pub kill_grace: Duration,
    pub docker_binary: PathBuf,
    /// Image for bids that name none.
    pub default_image: String,
}

impl RuntimeConfig {
    pub fn process(work_root: PathBuf) -> RuntimeConfig {
        RuntimeConfig {
            kind: RuntimeKind::Process,
            work_root,
            run_as_user: None,
            kill_grace: Duration::from_secs(10),
            docker_binary: PathBuf::from("docker"),
            default_image: "nvidia/cuda:12.4.1-base-ubuntu22.04".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputStream {
    Stdout,
    Stderr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitReason {
    /// The job ended by itself.
    Exited,
    /// Stopped at its deadline (the bid's max hours).
    MaxDuration,
    /// Stopped because the buyer cancelled.
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEvent {
    Started {
        pid: u32,
    },
    Output {
        stream: OutputStream,
        text: String,
    },
    /// Always the last event. `exit_code` is None when a signal ended the job.
    Exited {
        exit_code: Option<i32>,
        reason: ExitReason,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("the job has no command")]
    EmptyCommand,
    #[error("preparing the job's working directory: {0}")]
    WorkDir(std::io::Error),
    #[error("starting the job: {0}")]
    Spawn(std::io::Error),
}

/// A started job: its events, and a way to stop it early.
pub struct JobHandle {
    pub pid: u32,
    pub events: mpsc::Receiver<JobEvent>,
    cancel: Option<oneshot::Sender<Option<Duration>>>,
}

impl JobHandle {
    /// Asks the job to stop (SIGTERM, then SIGKILL after the grace period). The final
    /// `Exited` event says `Cancelled`.
    pub fn cancel(&mut self) {
        if let Some(cancel) = self.cancel.take() {
            let _ = cancel.send(None);
        }
    }

    /// Like [`JobHandle::cancel`], with `grace` between SIGTERM and SIGKILL instead of the
    /// configured one: the notice the exchange gives a preempted job.
    pub fn stop_within(&mut self, grace: Duration) {
        if let Some(cancel) = self.cancel.take() {
            let _ = cancel.send(Some(grace));
        }
    }
}

/// Events a slow consumer may fall behind by before the job's output blocks.
pub const JOB_EVENTS_BUFFER: usize = 256;
/// Bytes read from a job's pipe at a time.
pub const OUTPUT_CHUNK_BYTES: usize = 8 * 1024;

/// Starts the job and returns at once; a task supervises it until it ends.
pub fn start(spec: &JobSpec, config: &RuntimeConfig) -> Result<JobHandle, RuntimeError> {
    if spec.command.is_empty() {
        return Err(RuntimeError::EmptyCommand);
    }
    let mut command = match config.kind {
        RuntimeKind::Process => crate::process::command(spec, config)?,
        RuntimeKind::Docker => crate::docker::command(spec, config),
    };
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    // Its own process group, so stopping the job also stops whatever it started.
    command.process_group(0);
    let mut child = command.spawn().map_err(RuntimeError::Spawn)?;
    let pid = child.id().unwrap_or(0);
    let (events_tx, events) = mpsc::channel(JOB_EVENTS_BUFFER);
    let (cancel_tx, cancel_rx) = oneshot::channel();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let docker_name = (config.kind == RuntimeKind::Docker).then(|| crate::docker::container_name(spec.lease_id));
    let supervisor = Supervisor {
        events: events_tx,
        max_duration: spec.max_duration,
        kill_grace: config.kill_grace,
        docker: docker_name.map(|name| (config.docker_binary.clone(), name)),
    };
    tokio::spawn(supervisor.run(child, pid, stdout, stderr, cancel_rx));
    Ok(JobHandle { pid, events, cancel: Some(cancel_tx) })
}

struct Supervisor {
    events: mpsc::Sender<JobEvent>,
    max_duration: Duration,
    kill_grace: Duration,
    docker: Option<(PathBuf, String)>,
}

impl Supervisor {
    async fn run(
        self,
        mut child: Child,
        pid: u32,
        stdout: Option<impl AsyncRead + Unpin + Send + 'static>,
        stderr: Option<impl AsyncRead + Unpin + Send + 'static>,
        cancel: oneshot::Receiver<Option<Duration>>,
    ) {
        let _ = self.events.send(JobEvent::Started { pid }).await;
        let readers = [
            stdout.map(|out| tokio::spawn(forward(out, OutputStream::Stdout, self.events.clone()))),
            stderr.map(|err| tokio::spawn(forward(err, OutputStream::Stderr, self.events.clone()))),
        ];
        let deadline = tokio::time::sleep(self.max_duration);
        tokio::pin!(deadline);
        let mut cancel = cancel;
        let (status, reason) = tokio::select! {
            status = child.wait() => (status.ok(), ExitReason::Exited),
            _ = &mut deadline => (self.stop(&mut child, pid, self.kill_grace).await, ExitReason::MaxDuration),
            Ok(grace) = &mut cancel => {
                (self.stop(&mut child, pid, grace.unwrap_or(self.kill_grace)).await, ExitReason::Cancelled)
            }
        };
        // Output still in the pipes belongs before the exit event.
        for reader in readers.into_iter().flatten() {
            let _ = reader.await;
        }
        let exit_code = status.and_then(|s| s.code());
        let _ = self.events.send(JobEvent::Exited { exit_code, reason }).await;
    }

    /// SIGTERM to the job's process group (or container), SIGKILL after the grace period.
    async fn stop(&self, child: &mut Child, pid: u32, grace: Duration) -> Option<std::process::ExitStatus> {
        self.signal(pid, "TERM").await;
        match tokio::time::timeout(grace, child.wait()).await {
            Ok(status) => status.ok(),
            Err(_) => {
                self.signal(pid, "KILL").await;
                let _ = child.start_kill();
                child.wait().await.ok()
            }
        }
    }

    async fn signal(&self, pid: u32, signal: &str) {
        if let Some((docker, name)) = &self.docker {
            let _ = Command::new(docker).args(["kill", "--signal", signal, name]).output().await;
        }
        // `kill` with a negative pid signals the whole group; the program avoids unsafe libc calls.
        let _ = Command::new("kill").arg(format!("-{signal}")).arg("--").arg(format!("-{pid}")).output().await;
    }
}

async fn forward(mut pipe: impl AsyncRead + Unpin, stream: OutputStream, events: mpsc::Sender<JobEvent>) {
    let mut buffer = vec![0u8; OUTPUT_CHUNK_BYTES];
    let mut pending_utf8: Vec<u8> = Vec::new();
    loop {
        let read = match pipe.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending_utf8.extend_from_slice(&buffer[..read]);
        // Keep an incomplete UTF-8 sequence at the end for the next read.
        let valid = match std::str::from_utf8(&pending_utf8) {
            Ok(_) => pending_utf8.len(),
            Err(err) if err.error_len().is_none() => err.valid_up_to(),
            Err(_) => pending_utf8.len(),
        };
        let text = String::from_utf8_lossy(&pending_utf8[..valid]).into_owned();
        pending_utf8.drain(..valid);
        if !text.is_empty() && events.send(JobEvent::Output { stream, text }).await.is_err() {
            break;
        }
    }
    if !pending_utf8.is_empty() {
        let text = String::from_utf8_lossy(&pending_utf8).into_owned();
        let _ = events.send(JobEvent::Output { stream, text }).await;
    }
}
