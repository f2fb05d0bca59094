//! Test harness: a fresh PostgreSQL database per test, cloned from a migrated template, and the
//! whole Tessera router served on a loopback port.
//!
//! With `DATABASE_URL` set, databases are created on that server (and dropped after each test).
//! Without it, the harness starts a throwaway cluster from the local PostgreSQL binaries (as the
//! `postgres` user when run as root) that lives as long as the test process.

#![allow(dead_code)]

pub mod docserver;
pub mod flow;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions as _, Connection as _, PgPool};
use tessera::config::{Config, Issuer, MasterKey, Sources};
use tessera::platform::pgcluster::{Cluster, Durability, quote_ident};
use tessera::state::{AppState, ServerSettings};
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

/// Builds a `DATABASE_URL` for a database on the test server (for tests that run the binary).
type UrlFor = Box<dyn Fn(&str) -> String + Send + Sync>;

/// Where test databases are created.
struct DbServer {
    admin: PgConnectOptions,
    url_for: UrlFor,
    template: String,
    _cluster: Option<std::sync::Mutex<Cluster>>,
}

static SERVER: OnceCell<DbServer> = OnceCell::const_new();

async fn server() -> &'static DbServer {
    SERVER.get_or_init(init_server).await
}

async fn init_server() -> DbServer {
    let (admin, url_for, cluster): (PgConnectOptions, UrlFor, _) = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => {
            let admin: PgConnectOptions = url.parse().expect("DATABASE_URL is not a PostgreSQL URL");
            let base = url::Url::parse(&url).expect("DATABASE_URL is not a URL");
            let url_for = move |db: &str| {
                let mut u = base.clone();
                u.set_path(db);
                u.to_string()
            };
            (admin, Box::new(url_for), None)
        }
        _ => {
            let dir = throwaway_dir();
            let cluster = tokio::task::spawn_blocking(move || {
                Cluster::start(&dir.join("pg"), &dir.join("postgres.log"), Durability { durable: false })
            })
            .await
            .unwrap()
            .expect("cannot start a throwaway PostgreSQL cluster (install PostgreSQL or set DATABASE_URL)");
            let admin = cluster.connect_options("postgres");
            let data_dir = cluster.data_dir().to_owned();
            let url_for = move |db: &str| tessera::platform::pgcluster::socket_url(&data_dir, db);
            (admin, Box::new(url_for), Some(std::sync::Mutex::new(cluster)))
        }
    };
    let template = ensure_template(&admin).await;
    DbServer { admin, url_for, template, _cluster: cluster }
}

/// A directory for the throwaway cluster that the `postgres` user can reach; earlier runs'
/// directories whose cluster has stopped are removed.
fn throwaway_dir() -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let base = std::env::temp_dir();
    if let Ok(entries) = std::fs::read_dir(&base) {
        for e in entries.flatten() {
            let name = e.file_name();
            if name.to_string_lossy().starts_with("tessera-test-pg-") && !e.path().join("pg/postmaster.pid").exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let dir = base.join(format!("tessera-test-pg-{}-{}", std::process::id(), rand::random::<u32>()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// A template database holding the current migrations, named by their checksums, created once
/// per server under an advisory lock (concurrent test processes wait for the first).
async fn ensure_template(admin: &PgConnectOptions) -> String {
    let migrator = sqlx::migrate!("./migrations");
    let mut hash = Sha256::new();
    for m in migrator.iter() {
        hash.update(m.version.to_le_bytes());
        hash.update(&m.checksum);
    }
    let name = format!("tessera_tpl_{}", &hex::encode(hash.finalize())[..16]);
    let mut conn = admin.connect().await.expect("cannot connect to the test PostgreSQL server");
    sqlx::query("SELECT pg_advisory_lock(hashtext('tessera-test-template'))").execute(&mut conn).await.unwrap();
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_optional(&mut conn)
        .await
        .unwrap();
    if exists.is_none() {
        // Under the lock nobody else is building: leftovers of a crashed build can go.
        let stale: Vec<String> =
            sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'tessera\\_tpl\\_%\\_building\\_%'")
                .fetch_all(&mut conn)
                .await
                .unwrap();
        for db in stale {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(&db)))
                .execute(&mut conn)
                .await;
        }
        // Build under a temporary name and rename when complete, so a crash never leaves a
        // half-migrated template behind.
        let building = format!("{name}_building_{}", rand::random::<u32>());
        sqlx::query(&format!("CREATE DATABASE {}", quote_ident(&building))).execute(&mut conn).await.unwrap();
        let mut migrating = admin.clone().database(&building).connect().await.unwrap();
        migrator.run(&mut migrating).await.expect("migrations fail on a fresh database");
        migrating.close().await.unwrap();
        // The server may take a moment to end the closed pool's backends.
        let rename = format!("ALTER DATABASE {} RENAME TO {}", quote_ident(&building), quote_ident(&name));
        let mut attempts = 0;
        while let Err(e) = sqlx::query(&rename).execute(&mut conn).await {
            attempts += 1;
            if attempts >= 20 {
                let who: Vec<(Option<String>, Option<String>, Option<String>)> =
                    sqlx::query_as("SELECT application_name, state, query FROM pg_stat_activity WHERE datname = $1")
                        .bind(&building)
                        .fetch_all(&mut conn)
                        .await
                        .unwrap_or_default();
                panic!("cannot rename the template: {e}; sessions: {who:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    sqlx::query("SELECT pg_advisory_unlock(hashtext('tessera-test-template'))").execute(&mut conn).await.unwrap();
    conn.close().await.ok();
    name
}

/// A database of its own for one test, dropped when the last handle goes.
pub struct TestDb {
    pub name: String,
    pub pool: PgPool,
    pub options: PgConnectOptions,
}

impl TestDb {
    pub async fn new() -> Arc<Self> {
        let server = server().await;
        let name = format!("tessera_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = server.admin.connect().await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {} TEMPLATE {}", quote_ident(&name), quote_ident(&server.template)))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.ok();
        let options = server.admin.clone().database(&name);
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.clone())
            .await
            .unwrap();
        Arc::new(Self { name, pool, options })
    }

    /// A `DATABASE_URL` for this database, for tests that run the `tessera` binary.
    pub fn url(&self) -> String {
        let server = SERVER.get().expect("a TestDb exists only once the server is initialised");
        (server.url_for)(&self.name)
    }

    /// Make the database refuse new connections (`ALLOW_CONNECTIONS false`, SQLSTATE 55000) and
    /// end the open ones: "the database is there but will not talk to us".
    pub async fn refuse_connections(&self) {
        let mut conn = server().await.admin.connect().await.unwrap();
        sqlx::query(&format!("ALTER DATABASE {} ALLOW_CONNECTIONS false", quote_ident(&self.name)))
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
            .bind(&self.name)
            .execute(&mut conn)
            .await
            .unwrap();
    }

    /// Drop the database now (connections are terminated): "the database is down".
    pub async fn drop_now(&self) {
        let mut conn = server().await.admin.connect().await.unwrap();
        sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(&self.name)))
            .execute(&mut conn)
            .await
            .unwrap();
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(server) = SERVER.get() else { return };
        let admin = server.admin.clone();
        let name = self.name.clone();
        // Drop from a thread of its own: Drop cannot await, and the test's runtime may be gone.
        let dropper = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut conn) = admin.connect().await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(&name)))
                        .execute(&mut conn)
                        .await;
                }
            });
        });
        let _ = dropper.join();
    }
}

/// Options for a test server.
#[derive(Default, Clone)]
pub struct Options {
    /// Path appended to the issuer (`/tenant`).
    pub issuer_path: String,
    /// Use this issuer instead of this instance's own address: a second instance behind the
    /// same (imagined) load balancer as the first.
    pub issuer: Option<String>,
    pub master_key: Option<MasterKey>,
    /// Another loopback address to serve on instead of 127.0.0.1 (`127.0.0.2`): a second site,
    /// since browsers keep cookies apart by host but not by port.
    pub host: Option<&'static str>,
    /// Settings by environment-variable name, e.g. ("TESSERA_REFRESH_TOKEN_IDLE_TTL", "2m").
    pub settings: Vec<(&'static str, String)>,
    /// Name the server `localhost` instead of 127.0.0.1 (issuer and URLs): a WebAuthn relying
    /// party needs a domain name.
    pub localhost: bool,
}

/// Tessera served on a loopback port.
pub struct TestApp {
    pub addr: SocketAddr,
    /// The issuer.
    pub issuer: String,
    /// Where this instance's endpoints are (the issuer, unless the issuer is shared).
    pub base: String,
    /// The server's origin (`http://127.0.0.1:port`), without the issuer path.
    pub origin: String,
    pub client: reqwest::Client,
    pub state: AppState,
    pub db: Arc<TestDb>,
    shutdown: CancellationToken,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(Options::default()).await
    }

    pub async fn spawn_with(options: Options) -> Self {
        Self::spawn_on(TestDb::new().await, options).await
    }

    /// A second instance on the same database (cross-instance tests).
    pub async fn spawn_on(db: Arc<TestDb>, options: Options) -> Self {
        match std::env::var("TESSERA_TEST_LOG") {
            Ok(filter) => tessera::platform::telemetry::init(&filter, tessera::config::LogFormat::Pretty),
            Err(_) => {
                captured_logs();
            }
        }
        let host = options.host.unwrap_or("127.0.0.1");
        let listener = tokio::net::TcpListener::bind(format!("{host}:0")).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let origin =
            if options.localhost { format!("http://localhost:{}", addr.port()) } else { format!("http://{addr}") };
        let base = format!("{origin}{}", options.issuer_path);
        let issuer = Issuer::parse(options.issuer.as_deref().unwrap_or(&base)).unwrap();
        let mut sources = Sources::default();
        for (key, value) in &options.settings {
            sources.set(key, value.clone());
        }
        let config = Config::from_sources(&sources).expect("test settings are valid");
        let settings =
            ServerSettings::from_config(&config, issuer.clone(), options.master_key.unwrap_or_else(test_master_key));
        let state = AppState::new(settings, db.pool.clone()).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), state.until_listening())
            .await
            .expect("invalidation listener did not start");
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(tessera::server::run(state.clone(), vec![listener], shutdown.clone()));
        Self {
            addr,
            issuer: issuer.as_str().to_owned(),
            base,
            origin,
            client: client(),
            state,
            db,
            shutdown,
            server: Some(server),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    /// Stop serving and wait for in-flight requests.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Every log line of this test process (JSON, debug level), kept so a test can check that no
/// secret ever reaches the logs. Installed as the global subscriber by the first test server.
#[derive(Clone, Default)]
pub struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = self.0.lock()
            && b.len() < 512 * 1024 * 1024
        {
            b.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().map(|b| b.clone()).unwrap_or_default()).into_owned()
    }
}

pub fn captured_logs() -> &'static Captured {
    static LOGS: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug,sqlx=warn,hyper=info,reqwest=info,h2=info"))
            .with_current_span(true)
            .with_writer(move || writer.clone())
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        logs
    })
}

/// One master key per test process, generated (never stored in the repository).
pub fn test_master_key() -> MasterKey {
    static KEY: std::sync::OnceLock<MasterKey> = std::sync::OnceLock::new();
    KEY.get_or_init(MasterKey::generate).clone()
}

/// A client like an MCP client's HTTP stack: no redirects followed, cookies kept.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .cookie_store(true)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A free loopback port (bound and released; good enough for a test that starts a process).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The `tessera` binary built for these tests.
pub fn tessera_bin() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"));
    // Start from a clean configuration: only what the test sets.
    for (key, _) in std::env::vars() {
        if key.starts_with("TESSERA_") || key == "DATABASE_URL" {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// Poll `url` until it answers 200, or panic after `timeout`.
pub async fn wait_for(url: &str, timeout: Duration) -> reqwest::Response {
    let deadline = tokio::time::Instant::now() + timeout;
    let client = client();
    loop {
        if let Ok(res) = client.get(url).send().await
            && res.status() == 200
        {
            return res;
        }
        assert!(tokio::time::Instant::now() < deadline, "{url} did not answer 200 within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Run an admin command of the `tessera` binary against `db`, feeding `stdin`; its standard output.
pub fn admin(db: &TestDb, args: &[&str], stdin: &str) -> String {
    use std::io::Write as _;
    let mut child = tessera_bin()
        .args(args)
        .env("DATABASE_URL", db.url())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Run an admin command that must fail with exit code 2; its standard error.
pub fn admin_fails(db: &TestDb, args: &[&str]) -> String {
    let out = tessera_bin().args(args).env("DATABASE_URL", db.url()).stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{args:?} should fail with 2");
    String::from_utf8_lossy(&out.stderr).into_owned()
}
