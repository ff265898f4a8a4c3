//! The `capex` CLI against a real server: commands, `--json` output, exit codes.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use capex_e2e::{ServerProcess, binary, fresh_database_url};
use serde_json::Value;

struct Cli<'a> {
    exchange: &'a str,
    config_dir: &'a Path,
}

impl Cli<'_> {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(binary("capex"))
            .args(args)
            .env("CAPEX_EXCHANGE", self.exchange)
            .env("CAPEX_CONFIG_DIR", self.config_dir)
            .env_remove("CAPEX_TOKEN")
            .env_remove("CAPEX_PASSWORD")
            .stdin(Stdio::null())
            .output()
            .expect("capex runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "capex {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut with_json = args.to_vec();
        with_json.push("--json");
        serde_json::from_str(&self.ok(&with_json)).expect("--json prints JSON")
    }
}

#[tokio::test]
async fn cli_register_login_wallet_transfer_ledger_and_errors() {
    let db = fresh_database_url().unwrap();
    let server = ServerProcess::start(&[
        ("DATABASE_URL", db.as_str()),
        ("CAPEX_OPERATOR_EMAIL", "ops@example.test"),
        ("CAPEX_OPERATOR_PASSWORD", "operator-password"),
    ])
    .await
    .unwrap();
    let alice_dir = tempfile::tempdir().unwrap();
    let bob_dir = tempfile::tempdir().unwrap();
    let ops_dir = tempfile::tempdir().unwrap();
    let alice = Cli { exchange: &server.base_url, config_dir: alice_dir.path() };
    let bob = Cli { exchange: &server.base_url, config_dir: bob_dir.path() };
    let ops = Cli { exchange: &server.base_url, config_dir: ops_dir.path() };

    let alice_user = alice.json(&["register", "--email", "alice@example.test", "--password", "alice-password"]);
    let bob_user = bob.json(&[
        "register",
        "--email",
        "bob@example.test",
        "--password",
        "bob-password",
        "--role",
        "buyer,provider",
    ]);
    assert_eq!(bob_user["roles"], serde_json::json!(["buyer", "provider"]));
    alice.ok(&["login", "--email", "alice@example.test", "--password", "alice-password"]);
    bob.ok(&["login", "--email", "bob@example.test", "--password", "bob-password"]);
    ops.ok(&["login", "--email", "ops@example.test", "--password", "operator-password"]);

    // Saved credentials are private to the user.
    let mode = std::fs::metadata(alice_dir.path().join("credentials.json")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);

    let alice_id = alice_user["user_id"].as_str().unwrap();
    let minted = ops.json(&["operator", "mint", "--user", alice_id, "--amount", "100", "--key", "cli-mint-1"]);
    assert_eq!(minted["amount"], "100");
    // Same key again: replayed, not minted twice.
    ops.json(&["operator", "mint", "--user", alice_id, "--amount", "100", "--key", "cli-mint-1"]);
    assert_eq!(alice.json(&["wallet"])["available"], "100");

    let bob_id = bob_user["user_id"].as_str().unwrap();
    alice.ok(&["transfer", "--to", bob_id, "--amount", "12.5", "--memo", "thanks"]);
    assert_eq!(alice.json(&["wallet"])["available"], "87.5");
    let ledger = bob.json(&["ledger"]);
    assert_eq!(ledger["items"][0]["amount"], "12.5");
    assert_eq!(ledger["items"][0]["memo"], "thanks");
    assert!(alice.ok(&["wallet"]).contains("87.5"), "human table shows the balance");

    let invariants = ops.json(&["operator", "invariants"]);
    assert_eq!(invariants["ok"], true);

    // API error: overdraft -> code and field printed, exit code 1, nothing moved.
    let out = alice.run(&["transfer", "--to", bob_id, "--amount", "1000"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("insufficient_funds") && stderr.contains("field: amount"), "{stderr}");
    assert_eq!(alice.json(&["wallet"])["available"], "87.5");

    // Over-precise amount: refused by the exchange with its code.
    let out = alice.run(&["transfer", "--to", bob_id, "--amount", "0.0000001"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("amount_too_precise"));

    // Bad flag: clap's usage error, exit code 2.
    let out = alice.run(&["wallet", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-such-flag"));

    // Not an operator.
    let out = alice.run(&["operator", "users"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("forbidden"));

    // Unreachable exchange: exit code 3.
    let nowhere = Cli { exchange: "http://127.0.0.1:9", config_dir: alice_dir.path() };
    let out = nowhere.run(&["wallet"]);
    assert_eq!(out.status.code(), Some(3));
}
