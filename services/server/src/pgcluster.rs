//! A private PostgreSQL cluster for machines without `DATABASE_URL`: created under the
//! data directory with the machine's PostgreSQL binaries, started on a free local port,
//! and reused on the next start.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// Unprivileged user the cluster runs as when the server runs as root (initdb and
/// postgres refuse to run as root).
pub const CLUSTER_OS_USER: &str = "postgres";
pub const CLUSTER_DATABASE: &str = "capex";

const NO_BINARIES: &str = "no PostgreSQL binaries found (looked for pg_config, /usr/lib/postgresql/*/bin, PATH). \
Three ways out: install PostgreSQL (e.g. `apt-get install postgresql`), set DATABASE_URL to an existing database, \
or run `docker compose up`.";

/// Starts (or finds running) the private cluster and returns its connection URL.
pub async fn ensure_private_cluster(data_dir: &Path) -> anyhow::Result<String> {
    let data_dir = data_dir.to_path_buf();
    tokio::task::spawn_blocking(move || ensure_blocking(&data_dir)).await?
}

fn ensure_blocking(data_dir: &Path) -> anyhow::Result<String> {
    let bindir = find_bindir().context(NO_BINARIES)?;
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let data_dir = data_dir.canonicalize()?;
    let cluster = data_dir.join("pgdata");
    let as_root = running_as_root();

    if !cluster.join("PG_VERSION").exists() {
        std::fs::create_dir_all(&cluster)?;
        if as_root {
            chown_to_cluster_user(&data_dir)?;
        }
        run(
            &bindir,
            as_root,
            "initdb",
            &["-D", path_str(&cluster)?, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"],
        )?;
    }

    let port_file = data_dir.join("postgres.port");
    let running = run(&bindir, as_root, "pg_ctl", &["status", "-D", path_str(&cluster)?]).is_ok();
    let port = match (running, std::fs::read_to_string(&port_file)) {
        (true, Ok(saved)) => saved.trim().parse::<u16>().context("corrupt postgres.port")?,
        _ => start(&bindir, as_root, &cluster, &data_dir, &port_file)?,
    };

    create_database(&bindir, as_root, port)?;
    tracing::info!(data_dir = %cluster.display(), port, "using private PostgreSQL cluster");
    eprintln!("capex: private PostgreSQL cluster in {} on 127.0.0.1:{port}", cluster.display());
    Ok(format!("postgres://postgres@127.0.0.1:{port}/{CLUSTER_DATABASE}"))
}

fn start(bindir: &Path, as_root: bool, cluster: &Path, data_dir: &Path, port_file: &Path) -> anyhow::Result<u16> {
    let log = data_dir.join("postgres.log");
    if as_root && !log.exists() {
        std::fs::write(&log, b"")?;
        chown_to_cluster_user(&log)?;
    }
    // A saved port is preferred so URLs stay stable, but another program may have taken it.
    let saved = std::fs::read_to_string(port_file).ok().and_then(|s| s.trim().parse::<u16>().ok());
    let mut candidates: Vec<u16> = saved.into_iter().collect();
    candidates.push(free_port()?);
    let mut last_error = None;
    for port in candidates {
        let options = format!("-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''");
        match run(
            bindir,
            as_root,
            "pg_ctl",
            &["start", "-w", "-t", "60", "-D", path_str(cluster)?, "-l", path_str(&log)?, "-o", &options],
        ) {
            Ok(()) => {
                std::fs::write(port_file, port.to_string())?;
                return Ok(port);
            }
            Err(err) => last_error = Some(err),
        }
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("could not start PostgreSQL")))
        .with_context(|| format!("starting PostgreSQL; see {}", log.display()))
}

fn create_database(bindir: &Path, as_root: bool, port: u16) -> anyhow::Result<()> {
    let port = port.to_string();
    let exists = output(
        bindir,
        as_root,
        "psql",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-tAc",
            &format!("select 1 from pg_database where datname = '{CLUSTER_DATABASE}'"),
        ],
    )?;
    if exists.trim() != "1" {
        run(bindir, as_root, "createdb", &["-h", "127.0.0.1", "-p", &port, "-U", "postgres", CLUSTER_DATABASE])?;
    }
    Ok(())
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str().context("data directory path is not UTF-8")
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The directory holding `initdb`, newest major version first.
pub fn find_bindir() -> Option<PathBuf> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return Some(dir);
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort_by_key(|p| {
        p.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()).and_then(|v| v.parse::<u32>().ok()).unwrap_or(0)
    });
    if let Some(newest) = versions.pop() {
        return Some(newest);
    }
    std::env::var_os("PATH")?.to_str()?.split(':').map(PathBuf::from).find(|dir| dir.join("initdb").exists())
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

fn chown_to_cluster_user(path: &Path) -> anyhow::Result<()> {
    let status = Command::new("chown").args(["-R", CLUSTER_OS_USER, path_str(path)?]).status()?;
    if !status.success() {
        bail!("could not hand {} to the {CLUSTER_OS_USER} user", path.display());
    }
    Ok(())
}

fn command(bindir: &Path, as_root: bool, program: &str, args: &[&str]) -> Command {
    let binary = bindir.join(program);
    if as_root {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", CLUSTER_OS_USER, "--"]).arg(binary).args(args);
        cmd
    } else {
        let mut cmd = Command::new(binary);
        cmd.args(args);
        cmd
    }
}

fn run(bindir: &Path, as_root: bool, program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = command(bindir, as_root, program, args).output().with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!("{program} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn output(bindir: &Path, as_root: bool, program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = command(bindir, as_root, program, args).output().with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!("{program} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Stops the private cluster under `data_dir` (used by tests and the demo's Ctrl-C).
pub fn stop_private_cluster(data_dir: &Path) -> anyhow::Result<()> {
    let bindir = find_bindir().context(NO_BINARIES)?;
    let cluster = data_dir.join("pgdata");
    run(&bindir, running_as_root(), "pg_ctl", &["stop", "-m", "fast", "-D", path_str(&cluster)?])
}
