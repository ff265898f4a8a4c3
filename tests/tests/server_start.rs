//! The server binary starts on its own: without DATABASE_URL it creates and starts a
//! private PostgreSQL cluster, and a restart reuses the same data.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use capex_e2e::{ServerProcess, binary};
use serde_json::json;

/// Stops the private cluster even when the test fails, so no postgres outlives it.
struct StopCluster(std::path::PathBuf);

impl Drop for StopCluster {
    fn drop(&mut self) {
        let pgdata = self.0.join("pgdata");
        let bindir = String::from_utf8(Command::new("pg_config").arg("--bindir").output().unwrap().stdout).unwrap();
        let pg_ctl = std::path::Path::new(bindir.trim()).join("pg_ctl");
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&pg_ctl);
            c
        } else {
            Command::new(&pg_ctl)
        };
        let _ = cmd.args(["stop", "-m", "immediate", "-D"]).arg(&pgdata).output();
    }
}

fn is_root() -> bool {
    String::from_utf8_lossy(&Command::new("id").arg("-u").output().unwrap().stdout).trim() == "0"
}

#[tokio::test]
async fn starts_without_database_url_and_reuses_its_data() {
    let dir = tempfile::tempdir().unwrap();
    // The cluster runs as the unprivileged postgres user when we are root: it must be able
    // to reach the data directory.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data_dir = dir.path().join("state");
    let _stop = StopCluster(data_dir.clone());
    let data = data_dir.to_str().unwrap();
    let env = [
        ("CAPEX_DATA_DIR", data),
        ("CAPEX_OPERATOR_EMAIL", "root@example.test"),
        ("CAPEX_OPERATOR_PASSWORD", "operator-password"),
    ];

    let client = reqwest::Client::new();
    let mut server = ServerProcess::start(&env).await.expect("server starts with a private cluster");
    assert!(data_dir.join("pgdata/PG_VERSION").exists());
    let res = client
        .post(format!("{}/api/v1/auth/register", server.base_url))
        .json(&json!({"email": "kept@example.test", "password": "password123", "roles": ["buyer"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    server.terminate().unwrap();

    // Same data directory again: the user registered before is still there.
    let server = ServerProcess::start(&env).await.expect("server restarts on the same cluster");
    let res = client
        .post(format!("{}/api/v1/auth/login", server.base_url))
        .json(&json!({"email": "kept@example.test", "password": "password123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn refuses_to_start_without_a_jwt_secret_outside_demo_mode() {
    let out = Command::new(binary("capex-server"))
        .env_remove("CAPEX_JWT_SECRET")
        .env_remove("CAPEX_DEMO")
        .env("DATABASE_URL", capex_e2e::fresh_database_url().unwrap())
        .env("CAPEX_BIND", format!("127.0.0.1:{}", capex_e2e::free_port()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("CAPEX_JWT_SECRET"), "{stderr}");
}
