//! Runs a leased job on a provider host and reports what happens to it.
//!
//! Two runtimes: **docker** (`docker run --gpus "device=UUID,..."` with the bid's image,
//! the default where Docker is present) and **process** (the command runs directly on the
//! host with `CUDA_VISIBLE_DEVICES`/`NVIDIA_VISIBLE_DEVICES` set to the leased GPU UUIDs, a
//! fresh working directory, an environment holding only the job's variables, optionally as
//! an unprivileged user). The process runtime runs a buyer's command on the host itself, so
//! hosts enable it explicitly; demos and tests do.
//!
//! A job ends on its own exit, at its deadline (max hours) or on cancel; the last two get
//! SIGTERM, then SIGKILL after a grace period, sent to the job's whole process group.

mod docker;
mod job;
mod logs;
mod process;

pub use docker::docker_run_args;
pub use job::{
    ExitReason, JOB_EVENTS_BUFFER, JobEvent, JobHandle, JobSpec, OUTPUT_CHUNK_BYTES, OutputStream, RuntimeConfig,
    RuntimeError, RuntimeKind, start,
};
pub use logs::{LogBuffer, LogChunk};
