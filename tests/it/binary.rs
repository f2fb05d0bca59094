//! The `tessera` binary: configuration errors, `serve`, and `dev` from an empty and an existing data dir.

use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::Value;
use tessera::config::MasterKey;

use crate::common::{TestDb, admin, admin_fails, free_port, tessera_bin, wait_for};

/// Run `tessera serve` with `env` and expect exit code 2 with one line naming `key`.
fn expect_config_error(env: &[(&str, &str)], key: &str) {
    let mut cmd = tessera_bin();
    cmd.arg("serve");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{env:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected: {stderr}");
    assert!(lines[0].contains(key), "{key} not named: {stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "{stderr}");
}

#[test]
fn configuration_errors_exit_2_naming_the_key() {
    let key = MasterKey::generate().to_base64();
    let good_db = "postgres://tessera@127.0.0.1:1/tessera";
    expect_config_error(&[("TESSERA_ISSUER", "https://a.example"), ("TESSERA_MASTER_KEY", &key)], "DATABASE_URL");
    expect_config_error(&[("DATABASE_URL", good_db), ("TESSERA_ISSUER", "https://a.example")], "TESSERA_MASTER_KEY");
    expect_config_error(&[("DATABASE_URL", good_db), ("TESSERA_MASTER_KEY", &key)], "TESSERA_ISSUER");
    let base =
        [("DATABASE_URL", good_db), ("TESSERA_ISSUER", "https://a.example"), ("TESSERA_MASTER_KEY", key.as_str())];
    let with = |k: &'static str, v: &'static str| {
        let mut env: Vec<(&str, &str)> = base.iter().copied().filter(|(x, _)| *x != k).collect();
        env.push((k, v));
        env
    };
    expect_config_error(&with("TESSERA_ISSUER", "http://auth.example.com"), "TESSERA_ISSUER");
    expect_config_error(&with("TESSERA_ISSUER", "https://a.example/?q=1"), "TESSERA_ISSUER");
    expect_config_error(&with("TESSERA_MASTER_KEY", "c2hvcnQ="), "TESSERA_MASTER_KEY");
    expect_config_error(&with("TESSERA_MASTER_KEY", "%%%"), "TESSERA_MASTER_KEY");
    expect_config_error(&with("DATABASE_URL", "mysql://x/y"), "DATABASE_URL");
    expect_config_error(&with("TESSERA_LISTEN", "localhost"), "TESSERA_LISTEN");
    expect_config_error(&with("TESSERA_LOG_FORMAT", "xml"), "TESSERA_LOG_FORMAT");
}

#[test]
fn gateway_configuration_errors_exit_2_naming_the_key() {
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = tessera_bin();
        cmd.arg("gateway").args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let full = ["--upstream", "http://127.0.0.1:1/mcp", "--resource", "https://mcp.example.com/mcp"];
    let (code, err) = run(&full[..2], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("TESSERA_GATEWAY_RESOURCE"), "{err}");
    let (code, err) = run(&full, &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("TESSERA_GATEWAY_ISSUER"), "{err}");
    let (code, err) = run(&["--upstream", "https://127.0.0.1/mcp"], &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("TESSERA_GATEWAY_UPSTREAM") && err.contains("http://"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("gateway.toml");
    std::fs::write(&policy, "[tools]\n\"x\" = { scope = \"a\", rate = \"often\" }\n").unwrap();
    let mut args: Vec<&str> = full.to_vec();
    let policy_arg = policy.display().to_string();
    args.extend(["--issuer", "https://auth.example.com", "--policy", &policy_arg]);
    let (code, err) = run(&args, &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("TESSERA_GATEWAY_POLICY") && err.contains("\"x\""), "{err}");
    // The flag wins over the variable.
    let (code, err) = run(
        &full[..2],
        &[("TESSERA_GATEWAY_UPSTREAM", "not a url"), ("TESSERA_GATEWAY_RESOURCE", "https://a.example/mcp")],
    );
    assert_eq!(code, Some(2));
    assert!(err.contains("TESSERA_GATEWAY_ISSUER"), "the flag's upstream was used: {err}");
}

#[test]
fn config_file_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tessera.toml");
    std::fs::write(&file, "issuer = \"https://a.example\"\nlisten_adress = \"127.0.0.1:1\"\n").unwrap();
    let out = tessera_bin().arg("serve").arg("--config").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("listen_adress") && stderr.contains("not a known setting"), "{stderr}");
}

fn sigterm(child: &Child) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
}

/// Wait for a child to exit, killing it after `timeout`.
fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn serve_runs_migrations_serves_and_stops_on_sigterm() {
    let db = TestDb::new().await;
    let port = free_port();
    let mut child = tessera_bin()
        .arg("serve")
        .env("DATABASE_URL", db.url())
        .env("TESSERA_ISSUER", format!("http://127.0.0.1:{port}/"))
        .env("TESSERA_LISTEN", format!("127.0.0.1:{port}"))
        .env("TESSERA_MASTER_KEY", MasterKey::generate().to_base64())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let res = wait_for(&format!("{base}/.well-known/oauth-authorization-server"), Duration::from_secs(30)).await;
    let doc: Value = res.json().await.unwrap();
    assert_eq!(doc["issuer"], base, "issuer is published without the trailing slash");
    assert_eq!(reqwest::get(format!("{base}/readyz")).await.unwrap().status(), 200);
    // Routine fetches and successful token requests are logged at debug; this one (405) at info.
    assert_eq!(reqwest::get(format!("{base}/token")).await.unwrap().status(), 405);
    sigterm(&child);
    let status = wait_exit(&mut child, Duration::from_secs(20));
    assert!(status.success(), "serve exited with {status}");
    // The log is JSON lines with the request id.
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    // (Token requests skip the per-request span at info, so the line carries the id itself.)
    let request_line = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["route"] == "/token" && v["message"] == "request")
        .unwrap_or_else(|| panic!("no JSON request log line in:\n{stderr}"));
    assert_eq!(request_line["level"], "INFO");
    assert_eq!(request_line["status"], 405);
    assert!(request_line["request_id"].as_str().is_some_and(|id| id.len() == 32));
}

/// Start `tessera dev` on `data_dir`, wait until it serves, and return the child and its metadata.
async fn start_dev(data_dir: &std::path::Path, port: u16) -> (Child, Value, Value) {
    let child = tessera_bin()
        .args(["dev", "--port", &port.to_string(), "--data-dir"])
        .arg(data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://localhost:{port}");
    let meta = wait_for(&format!("{base}/.well-known/oauth-authorization-server"), Duration::from_secs(90)).await;
    let meta: Value = meta.json().await.unwrap();
    let jwks: Value = reqwest::get(format!("{base}/jwks.json")).await.unwrap().json().await.unwrap();
    (child, meta, jwks)
}

#[tokio::test]
async fn dev_starts_from_an_empty_data_dir_and_reuses_it() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::Builder::new().prefix("tessera-dev-test").tempdir().unwrap();
    // The private cluster runs as the postgres user when we are root: it must reach the dir.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = tmp.path().join("data");
    let port = free_port();

    let (mut child, meta, jwks) = start_dev(&data, port).await;
    assert_eq!(meta["issuer"], format!("http://localhost:{port}"));
    let kid = jwks["keys"][0]["kid"].as_str().unwrap().to_owned();
    assert!(data.join("master.key").exists());
    assert!(data.join("pg/PG_VERSION").exists());
    assert!(data.join("pg/postmaster.pid").exists(), "the private PostgreSQL runs while dev runs");
    // It listens on a Unix socket only.
    let conf = std::fs::read_to_string(data.join("pg/postmaster.pid")).unwrap();
    assert!(conf.lines().any(|l| l.trim() == data.join("pg").to_str().unwrap()), "socket dir in the data dir:\n{conf}");
    sigterm(&child);
    let status = wait_exit(&mut child, Duration::from_secs(60));
    assert!(status.success(), "dev exited with {status}");
    let mut stdout = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    assert!(stdout.contains(&format!("http://localhost:{port}")), "banner names the issuer:\n{stdout}");
    assert!(!data.join("pg/postmaster.pid").exists(), "PostgreSQL stopped cleanly with dev");

    // Second run: same data, same signing key.
    let (mut child, meta, jwks) = start_dev(&data, port).await;
    assert_eq!(meta["issuer"], format!("http://localhost:{port}"));
    assert_eq!(jwks["keys"][0]["kid"], kid.as_str(), "the second run reuses the data");
    sigterm(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(60)).success());
    assert!(!data.join("pg/postmaster.pid").exists());
}

/// Run the binary against `db` with `stdin`, expecting success; returns stdout.
#[tokio::test]
async fn admin_commands_manage_resources_users_and_clients() {
    let app = crate::common::TestApp::spawn().await;
    let db = &app.db;
    let out = admin(
        db,
        &[
            "resource",
            "add",
            "https://MCP.example.com/mcp/",
            "--name",
            "Example",
            "--scope",
            "tools:read=Read tools",
            "--scope",
            "tools:write=Write",
            "--default-scope",
            "tools:read",
            "--token-ttl",
            "5m",
            "--default",
        ],
        "",
    );
    assert!(out.contains("https://mcp.example.com/mcp"), "canonical URI printed: {out}");
    let list = admin(db, &["resource", "list"], "");
    assert!(list.contains("https://mcp.example.com/mcp") && list.contains("5m") && list.contains("yes"), "{list}");
    assert!(
        admin_fails(db, &["resource", "add", "https://mcp.example.com/mcp", "--name", "Again"]).contains("already")
    );
    assert!(admin_fails(db, &["resource", "add", "https://x.example/#f", "--name", "X"]).contains("fragment"));
    assert!(
        admin_fails(db, &["resource", "add", "https://y.example", "--name", "Y", "--default-scope", "nope"])
            .contains("--default-scope")
    );
    // The running server learns about the resource through a notification.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while app.state.resources.load().default_resource().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "resource not picked up: {:?}",
            app.state.resources.load().all().iter().map(|r| (r.uri.clone(), r.is_default)).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let meta: Value = app.get("/.well-known/oauth-authorization-server").await.json().await.unwrap();
    assert!(meta["scopes_supported"].as_array().unwrap().iter().any(|s| s == "tools:write"));

    let out = admin(
        db,
        &["user", "add", "bob", "--email", "bob@example.com", "--password-stdin"],
        "a long enough password\n",
    );
    assert!(out.starts_with("user "), "{out}");
    assert!(admin_fails(db, &["user", "add", "carol", "--password-stdin"]).contains("password"));
    assert!(admin(db, &["user", "list"], "").contains("bob@example.com"));
    let stored: String =
        sqlx::query_scalar("SELECT password_hash FROM users WHERE username = 'bob'").fetch_one(&db.pool).await.unwrap();
    assert!(stored.starts_with("$argon2id$") && !stored.contains("a long enough password"));
    admin(db, &["user", "passwd", "bob", "--password-stdin"], "another long password\n");
    admin(db, &["user", "disable", "bob"], "");
    assert!(admin(db, &["user", "list"], "").contains("disabled"));
    admin(db, &["user", "enable", "bob"], "");

    let out = admin(db, &["client", "add", "--name", "Service", "--confidential", "--grant", "client_credentials"], "");
    let id = out.lines().find_map(|l| l.strip_prefix("client_id")).unwrap().trim().to_owned();
    let secret = out.lines().find_map(|l| l.strip_prefix("client_secret")).unwrap().trim().to_owned();
    let stored: Option<Vec<u8>> = sqlx::query_scalar("SELECT secret_hash FROM clients WHERE client_id = $1")
        .bind(&id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(stored.unwrap().len(), 32, "the secret is stored as a SHA-256 digest");
    let (status, _, body) = app.token(&[("grant_type", "client_credentials")], Some((&id, &secret))).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        admin_fails(db, &["client", "add", "--name", "Bad", "--redirect-uri", "javascript:alert(1)"])
            .contains("javascript")
    );
    assert!(
        admin_fails(db, &["client", "add", "--name", "Bad", "--grant", "client_credentials"])
            .contains("--confidential")
    );
    assert!(admin(db, &["client", "list"], "").contains("Service"));
    admin(db, &["client", "remove", &id], "");
    // Every instance forgets the client as soon as the deletion is announced.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _, _) = app.token(&[("grant_type", "client_credentials")], Some((&id, &secret))).await;
        if status == 401 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "a removed client still gets tokens");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    admin(db, &["resource", "remove", "https://mcp.example.com/mcp"], "");
    assert!(!admin(db, &["resource", "list"], "").contains("mcp.example.com"));
}
