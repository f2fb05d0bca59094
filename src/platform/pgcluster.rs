//! A private PostgreSQL cluster run from the local server binaries, for `tessera dev`, the admin
//! commands that work against the dev data dir, and the test harness.
//!
//! The cluster listens only on a Unix socket inside its data directory, so it never collides with
//! another PostgreSQL. PostgreSQL refuses to run as root, so when we are root the cluster runs as
//! the unprivileged `postgres` system user. The postmaster is started under a tiny `sh` supervisor
//! whose standard input is a pipe from this process: when we close the pipe — on a clean stop, or
//! because this process died in any way — the supervisor asks PostgreSQL for a fast shutdown, so a
//! crashed Tessera never leaves an orphan database server behind.

use std::fs;
use std::io::Read as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;

/// The superuser every private cluster is created with.
pub const SUPERUSER: &str = "tessera";
/// The port number in the socket's file name (no TCP port is opened).
pub const SOCKET_PORT: u16 = 5432;
/// `sun_path` is 108 bytes on Linux, including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "PostgreSQL server binaries (initdb, postgres) were not found on PATH, via `pg_config --bindir`, or under /usr/lib/postgresql/*/bin.\n\
         Install PostgreSQL (Debian/Ubuntu: `apt-get install postgresql`; macOS: `brew install postgresql`), \
         or set DATABASE_URL to an existing database, or run `docker compose up`."
    )]
    BinariesNotFound,
    #[error(
        "PostgreSQL refuses to run as root and there is no `postgres` system user to run it as.\n\
         Create one (`useradd --system --user-group --home-dir /nonexistent --shell /usr/sbin/nologin postgres`), \
         run this command as an ordinary user, or set DATABASE_URL to an existing database."
    )]
    NoUnprivilegedUser,
    #[error(
        "the `postgres` user cannot reach {dir}, so PostgreSQL cannot use a data directory under it.\n\
         Run `chmod o+x {dir}`, or pass --data-dir with a directory it can reach (for example /var/tmp/tessera)."
    )]
    Unreachable { dir: String },
    #[error(
        "the socket path {path} is {len} bytes long; Unix sockets allow at most {MAX_SOCKET_PATH}. Pass --data-dir with a shorter path."
    )]
    SocketPathTooLong { path: String, len: usize },
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("PostgreSQL did not become ready within {secs} s; its log ({log}) ends with:\n{tail}")]
    NotReady { secs: u64, log: String, tail: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
    let context = context.into();
    move |source| ClusterError::Io { context, source }
}

/// Where `initdb` and `postgres` live.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub bindir: PathBuf,
}

impl Binaries {
    /// Look on PATH, then `pg_config --bindir`, then `/usr/lib/postgresql/<newest>/bin`.
    pub fn find() -> Result<Self, ClusterError> {
        let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
        if let Some(path) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&path) {
                if has_both(&dir) {
                    return Ok(Self { bindir: dir });
                }
            }
        }
        if let Ok(out) = Command::new("pg_config").arg("--bindir").stderr(Stdio::null()).output()
            && out.status.success()
        {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if has_both(&dir) {
                return Ok(Self { bindir: dir });
            }
        }
        let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let version = e.file_name().to_str()?.parse::<u32>().ok()?;
                let bin = e.path().join("bin");
                has_both(&bin).then_some((version, bin))
            })
            .collect();
        versions.sort();
        versions.pop().map(|(_, bindir)| Self { bindir }).ok_or(ClusterError::BinariesNotFound)
    }
}

/// The Unix account the cluster runs as when we are root.
#[derive(Clone, Copy, Debug)]
struct RunAs {
    uid: u32,
    gid: u32,
}

fn run_as() -> Result<Option<RunAs>, ClusterError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    match nix::unistd::User::from_name("postgres") {
        Ok(Some(user)) => Ok(Some(RunAs { uid: user.uid.as_raw(), gid: user.gid.as_raw() })),
        _ => Err(ClusterError::NoUnprivilegedUser),
    }
}

/// Options for a new cluster.
#[derive(Clone, Copy, Debug)]
pub struct Durability {
    /// `false` for throwaway test clusters: no fsync, no full-page writes.
    pub durable: bool,
}

/// A running private cluster (or one we attached to because another process already runs it).
pub struct Cluster {
    data_dir: PathBuf,
    log_path: PathBuf,
    supervisor: Option<(Child, ChildStdin)>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("data_dir", &self.data_dir).field("owned", &self.owned()).finish()
    }
}

impl Cluster {
    /// Create the cluster in `data_dir` if it does not exist yet, and start it unless a postmaster
    /// already runs there. Blocking: call from a blocking thread.
    pub fn start(data_dir: &Path, log_path: &Path, durability: Durability) -> Result<Self, ClusterError> {
        let bins = Binaries::find()?;
        let run_as = run_as()?;
        let data_dir = absolute(data_dir)?;
        let socket = data_dir.join(format!(".s.PGSQL.{SOCKET_PORT}"));
        let socket_len = socket.as_os_str().len();
        if socket_len > MAX_SOCKET_PATH {
            return Err(ClusterError::SocketPathTooLong { path: socket.display().to_string(), len: socket_len });
        }
        if let Some(parent) = data_dir.parent() {
            fs::create_dir_all(parent).map_err(io_err(format!("cannot create {}", parent.display())))?;
        }
        if let Some(run_as) = run_as {
            check_reachable(&data_dir, run_as)?;
        }

        if !data_dir.join("PG_VERSION").exists() {
            init(&bins, &data_dir, log_path, run_as)?;
        }

        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .map_err(io_err(format!("cannot open {}", log_path.display())))?;
        let mut cluster = Self { data_dir: data_dir.clone(), log_path: log_path.to_owned(), supervisor: None };
        if postmaster_running(&data_dir) {
            // Another `tessera` (a dev server, or an admin command) runs this cluster: share it.
            cluster.wait_ready(&log_path.display().to_string())?;
            return Ok(cluster);
        }

        let mut args: Vec<String> = vec![
            "-D".into(),
            data_dir.display().to_string(),
            "-c".into(),
            "listen_addresses=".into(),
            "-c".into(),
            format!("unix_socket_directories={}", data_dir.display()),
            "-c".into(),
            "unix_socket_permissions=0700".into(),
            "-p".into(),
            SOCKET_PORT.to_string(),
            "-c".into(),
            "max_connections=200".into(),
        ];
        if !durability.durable {
            for setting in ["fsync=off", "synchronous_commit=off", "full_page_writes=off"] {
                args.push("-c".into());
                args.push(setting.into());
            }
        }
        // The supervisor starts the postmaster, and asks it for a fast shutdown (SIGINT) as soon
        // as its standard input closes; it exits when the postmaster exits.
        // (A background job's stdin is /dev/null in a non-interactive shell, hence the copy on fd 3.)
        const SUPERVISOR: &str =
            r#"exec 3<&0; "$@" 3<&- & pid=$!; ( cat <&3 >/dev/null; kill -INT "$pid" 2>/dev/null ) & wait "$pid""#;
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(SUPERVISOR)
            .arg("tessera-pg-supervisor")
            .arg(bins.bindir.join("postgres"))
            .args(&args)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(log.try_clone().map_err(io_err("cannot open the PostgreSQL log"))?)
            .stderr(log)
            // Its own process group: Ctrl-C in a terminal must reach Tessera, which then stops
            // PostgreSQL after its own shutdown, not both at once.
            .process_group(0);
        if let Some(run_as) = run_as {
            cmd.uid(run_as.uid).gid(run_as.gid);
        }
        let mut child = cmd.spawn().map_err(io_err("cannot start PostgreSQL"))?;
        let stdin = child.stdin.take().ok_or_else(|| ClusterError::Command {
            what: "starting PostgreSQL".into(),
            detail: "no pipe to the supervisor".into(),
        })?;
        cluster.supervisor = Some((child, stdin));
        cluster.wait_ready(&log_path.display().to_string())?;
        Ok(cluster)
    }

    /// Whether this process started the postmaster (and so stops it).
    pub fn owned(&self) -> bool {
        self.supervisor.is_some()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Connection options for `database` over the cluster's socket.
    pub fn connect_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new().socket(&self.data_dir).port(SOCKET_PORT).username(SUPERUSER).database(database)
    }

    fn wait_ready(&mut self, log: &str) -> Result<(), ClusterError> {
        let socket = self.data_dir.join(format!(".s.PGSQL.{SOCKET_PORT}"));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // `postmaster.pid` gains a last line "ready" once the server accepts connections.
            let ready = fs::read_to_string(self.data_dir.join("postmaster.pid"))
                .map(|s| s.lines().any(|l| l.trim() == "ready"))
                .unwrap_or(false);
            if ready && socket.exists() {
                return Ok(());
            }
            if let Some((child, _)) = &mut self.supervisor
                && let Ok(Some(_)) = child.try_wait()
            {
                self.supervisor = None;
                return Err(ClusterError::NotReady { secs: 0, log: log.to_owned(), tail: log_tail(&self.log_path) });
            }
            if Instant::now() > deadline {
                return Err(ClusterError::NotReady { secs: 60, log: log.to_owned(), tail: log_tail(&self.log_path) });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stop the postmaster if we started it, waiting for its clean shutdown. Blocking.
    pub fn stop(mut self) -> Result<(), ClusterError> {
        let Some((mut child, stdin)) = self.supervisor.take() else {
            return Ok(());
        };
        drop(stdin);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                Ok(None) => {
                    let _ = child.kill();
                    return Err(ClusterError::Command {
                        what: "stopping PostgreSQL".into(),
                        detail: "it did not stop within 60 s".into(),
                    });
                }
                Err(e) => return Err(io_err("waiting for PostgreSQL to stop")(e)),
            }
        }
    }
}

/// A `postgres://` URL for `database` over the socket of the cluster in `data_dir`.
pub fn socket_url(data_dir: &Path, database: &str) -> String {
    let host: String = url::form_urlencoded::byte_serialize(data_dir.as_os_str().as_encoded_bytes()).collect();
    let database: String = url::form_urlencoded::byte_serialize(database.as_bytes()).collect();
    format!("postgres://{SUPERUSER}@localhost/{database}?host={host}&port={SOCKET_PORT}")
}

fn absolute(path: &Path) -> Result<PathBuf, ClusterError> {
    std::path::absolute(path).map_err(io_err(format!("cannot resolve {}", path.display())))
}

/// Every directory above the data dir must let the `postgres` user through.
fn check_reachable(data_dir: &Path, run_as: RunAs) -> Result<(), ClusterError> {
    for dir in data_dir.ancestors().skip(1) {
        let Ok(meta) = fs::metadata(dir) else {
            continue;
        };
        let mode = meta.permissions().mode();
        let ok = if meta.uid() == run_as.uid {
            mode & 0o100 != 0
        } else if meta.gid() == run_as.gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !ok {
            return Err(ClusterError::Unreachable { dir: dir.display().to_string() });
        }
    }
    Ok(())
}

fn init(bins: &Binaries, data_dir: &Path, log_path: &Path, run_as: Option<RunAs>) -> Result<(), ClusterError> {
    fs::create_dir_all(data_dir).map_err(io_err(format!("cannot create {}", data_dir.display())))?;
    fs::set_permissions(data_dir, fs::Permissions::from_mode(0o700))
        .map_err(io_err(format!("cannot set permissions of {}", data_dir.display())))?;
    if let Some(run_as) = run_as {
        nix::unistd::chown(
            data_dir,
            Some(nix::unistd::Uid::from_raw(run_as.uid)),
            Some(nix::unistd::Gid::from_raw(run_as.gid)),
        )
        .map_err(|e| ClusterError::Io {
            context: format!("cannot give {} to the postgres user", data_dir.display()),
            source: e.into(),
        })?;
    }
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .map_err(io_err(format!("cannot open {}", log_path.display())))?;
    let mut cmd = Command::new(bins.bindir.join("initdb"));
    cmd.arg("-D")
        .arg(data_dir)
        .args(["--username", SUPERUSER, "--auth", "trust", "--encoding", "UTF8", "--locale", "C", "--no-instructions"])
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(io_err("cannot open the PostgreSQL log"))?)
        .stderr(log);
    if let Some(run_as) = run_as {
        cmd.uid(run_as.uid).gid(run_as.gid);
    }
    let status = cmd.status().map_err(io_err("cannot run initdb"))?;
    if !status.success() {
        return Err(ClusterError::Command {
            what: "initdb".into(),
            detail: format!(
                "exit status {status}; its output ({}) ends with:\n{}",
                log_path.display(),
                log_tail(log_path)
            ),
        });
    }
    Ok(())
}

/// A postmaster whose pid file names a live process runs on this data dir.
fn postmaster_running(data_dir: &Path) -> bool {
    let Ok(text) = fs::read_to_string(data_dir.join("postmaster.pid")) else {
        return false;
    };
    let Some(pid) = text.lines().next().and_then(|l| l.trim().parse::<i32>().ok()) else {
        return false;
    };
    // Signal 0 checks existence; EPERM also means the process exists (it belongs to another user).
    matches!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None), Ok(()) | Err(nix::errno::Errno::EPERM))
}

fn log_tail(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut f) = fs::File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

/// Create `database` in the cluster unless it exists.
pub async fn ensure_database(admin: &sqlx::PgPool, database: &str) -> Result<(), sqlx::Error> {
    let exists: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1").bind(database).fetch_optional(admin).await?;
    if exists.is_none() {
        // CREATE DATABASE takes no bind parameters; the name is quoted as an identifier.
        let sql = format!("CREATE DATABASE {}", quote_ident(database));
        if let Err(e) = sqlx::query(&sql).execute(admin).await {
            // Another process created it in the meantime.
            let duplicate = e.as_database_error().and_then(|d| d.code()).is_some_and(|c| c == "42P04");
            if !duplicate {
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Quote an SQL identifier (for the few statements, like CREATE DATABASE, that cannot take parameters).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
