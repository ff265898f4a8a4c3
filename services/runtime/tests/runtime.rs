//! Real processes: what a job sees, and how it is stopped.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use capex_runtime::{
    ExitReason, JobEvent, JobHandle, JobSpec, RuntimeConfig, RuntimeError, RuntimeKind, docker_run_args, start,
};
use uuid::Uuid;

fn spec(script: &str, max_duration: Duration) -> JobSpec {
    JobSpec {
        lease_id: Uuid::now_v7(),
        command: vec!["sh".into(), "-c".into(), script.into()],
        env: BTreeMap::from([("JOB_VAR".to_string(), "from-the-bid".to_string())]),
        image: None,
        gpu_uuids: vec!["GPU-aaaa".into(), "GPU-bbbb".into()],
        max_duration,
    }
}

fn config(root: &std::path::Path) -> RuntimeConfig {
    RuntimeConfig { kill_grace: Duration::from_millis(500), ..RuntimeConfig::process(root.to_path_buf()) }
}

/// Collects output until the job exits.
async fn finish(mut job: JobHandle) -> (String, Option<i32>, ExitReason) {
    let mut output = String::new();
    while let Some(event) = job.events.recv().await {
        match event {
            JobEvent::Started { .. } => {}
            JobEvent::Output { text, .. } => output.push_str(&text),
            JobEvent::Exited { exit_code, reason } => return (output, exit_code, reason),
        }
    }
    panic!("the event stream ended without Exited");
}

#[tokio::test]
async fn a_job_sees_only_its_gpus_its_env_and_a_fresh_directory() {
    let root = tempfile::tempdir().unwrap();
    let script = "echo $CUDA_VISIBLE_DEVICES; echo $NVIDIA_VISIBLE_DEVICES; echo var=$JOB_VAR; \
                  echo cargo=${CARGO:-unset}; pwd; ls -A | wc -l; echo done";
    let job_spec = spec(script, Duration::from_secs(30));
    let job = start(&job_spec, &config(root.path())).unwrap();
    let (output, code, reason) = finish(job).await;
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(lines[0], "GPU-aaaa,GPU-bbbb");
    assert_eq!(lines[1], "GPU-aaaa,GPU-bbbb");
    assert_eq!(lines[2], "var=from-the-bid");
    assert_eq!(lines[3], "cargo=unset", "the agent's environment must not leak into jobs");
    let dir: PathBuf = root.path().join(job_spec.lease_id.to_string()).canonicalize().unwrap();
    assert_eq!(PathBuf::from(lines[4]).canonicalize().unwrap(), dir);
    assert_eq!(lines[5].trim(), "0", "the working directory starts empty");
    assert_eq!(lines[6], "done");
    assert_eq!((code, reason), (Some(0), ExitReason::Exited));
}

#[tokio::test]
async fn exit_codes_and_stderr_are_reported() {
    let root = tempfile::tempdir().unwrap();
    let job = start(&spec("echo oops >&2; exit 7", Duration::from_secs(30)), &config(root.path())).unwrap();
    let (output, code, reason) = finish(job).await;
    assert_eq!(output, "oops\n");
    assert_eq!((code, reason), (Some(7), ExitReason::Exited));
}

#[tokio::test]
async fn a_job_past_its_deadline_is_stopped_with_its_children() {
    let root = tempfile::tempdir().unwrap();
    let started = Instant::now();
    // The background sleep is a grandchild: stopping must reach the whole process group.
    let job = start(&spec("echo begin; sleep 30 & wait", Duration::from_millis(700)), &config(root.path())).unwrap();
    let (output, code, reason) = finish(job).await;
    assert_eq!(output, "begin\n");
    assert_eq!(reason, ExitReason::MaxDuration);
    assert_eq!(code, None, "ended by a signal");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_job_ignoring_sigterm_gets_sigkill() {
    let root = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let job = start(&spec("trap '' TERM; echo stubborn; sleep 30", Duration::from_millis(300)), &config(root.path()))
        .unwrap();
    let (output, _, reason) = finish(job).await;
    assert_eq!(output, "stubborn\n");
    assert_eq!(reason, ExitReason::MaxDuration);
    assert!(started.elapsed() < Duration::from_secs(10), "SIGKILL after the grace period");
}

#[tokio::test]
async fn cancel_stops_a_running_job() {
    let root = tempfile::tempdir().unwrap();
    let mut job = start(&spec("echo running; sleep 30", Duration::from_secs(60)), &config(root.path())).unwrap();
    // Wait until it runs before cancelling.
    loop {
        if let Some(JobEvent::Output { .. }) = job.events.recv().await {
            break;
        }
    }
    job.cancel();
    let (_, _, reason) = finish(job).await;
    assert_eq!(reason, ExitReason::Cancelled);
}

#[tokio::test]
async fn empty_commands_and_missing_docker_are_errors() {
    let root = tempfile::tempdir().unwrap();
    let mut empty = spec("", Duration::from_secs(1));
    empty.command.clear();
    assert!(matches!(start(&empty, &config(root.path())), Err(RuntimeError::EmptyCommand)));
    let docker = RuntimeConfig {
        kind: RuntimeKind::Docker,
        docker_binary: PathBuf::from("/nonexistent/docker"),
        ..config(root.path())
    };
    assert!(matches!(start(&spec("true", Duration::from_secs(1)), &docker), Err(RuntimeError::Spawn(_))));
}

#[test]
fn docker_gets_only_the_leased_gpus_and_the_jobs_env() {
    let mut job = spec("nvidia-smi", Duration::from_secs(1));
    job.image = Some("pytorch/pytorch:latest".into());
    let args = docker_run_args(&job, "fallback:image");
    let gpus = args.iter().position(|a| a == "--gpus").unwrap();
    assert_eq!(args[gpus + 1], "\"device=GPU-aaaa,GPU-bbbb\"");
    assert!(args.contains(&"JOB_VAR=from-the-bid".to_string()));
    let image = args.iter().position(|a| a == "pytorch/pytorch:latest").unwrap();
    assert_eq!(&args[image + 1..], ["sh", "-c", "nvidia-smi"]);
    assert!(args.contains(&"--rm".to_string()));
}
