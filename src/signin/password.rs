//! Human passwords: argon2id with the OWASP parameters (19 MiB, 2 passes, 1 lane), verified on a
//! few threads of their own at a lower CPU priority, at most one computation per thread, so a
//! login flood can neither exhaust memory nor take the cores from token requests (the threads
//! still use every core that nothing else wants). An unknown user is checked against a dummy
//! hash, so it costs the same as a wrong password.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, LazyLock, Mutex, mpsc};

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use tokio::sync::Semaphore;

pub const MIN_LEN: usize = 8;
pub const MAX_LEN: usize = 1024;

/// The niceness of the argon2 threads (Linux; 0 is the default, 19 the lowest priority). At 10 the
/// scheduler gives a busy core to a request thread about ten times as readily as to an argon2
/// thread, so token requests keep their latency during a login flood, while logins still get
/// every core left idle.
const NICENESS: i32 = 10;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("passwords must be {MIN_LEN} to {MAX_LEN} characters")]
    Length,
    #[error("password hashing failed")]
    Hashing,
}

/// Threads of the pool: one per core, at least 2.
fn pool_size() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()).max(2)
}

/// Concurrent argon2 computations (each holds 19 MiB): one per pool thread. Waiting happens here,
/// in the request, so a request given up (the browser went away) leaves no work behind.
static SLOTS: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(pool_size()));

/// The argon2 threads; `None` if not one could be started (then the runtime's blocking threads
/// are used, at normal priority).
static POOL: LazyLock<Option<Pool>> = LazyLock::new(Pool::start);

/// Verified against when the user does not exist.
static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| hash_blocking("tessera dummy password for unknown users").unwrap_or_default());

type Job = Box<dyn FnOnce() + Send>;

struct Pool {
    jobs: mpsc::Sender<Job>,
}

impl Pool {
    fn start() -> Option<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let mut started = 0;
        for i in 0..pool_size() {
            let queue = Arc::clone(&queue);
            let spawned = std::thread::Builder::new().name(format!("tessera-argon2-{i}")).spawn(move || {
                lower_priority();
                loop {
                    // One idle thread waits on the queue while the others wait for the lock.
                    let job = match queue.lock() {
                        Ok(queue) => queue.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    // A panic drops the job's answer channel (the caller sees a failure) and
                    // leaves the thread serving.
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                }
            });
            match spawned {
                Ok(_) => started += 1,
                Err(e) => tracing::warn!(error = %e, "could not start an argon2 thread"),
            }
        }
        (started > 0).then_some(Self { jobs })
    }
}

/// Lower this thread's CPU priority (on Linux the niceness is per thread), never raise it.
#[cfg(target_os = "linux")]
fn lower_priority() {
    use rustix::process::{getpriority_process, setpriority_process};
    let tid = Some(rustix::thread::gettid());
    if getpriority_process(tid).unwrap_or(0) >= NICENESS {
        return;
    }
    if let Err(e) = setpriority_process(tid, NICENESS) {
        tracing::warn!(error = %e, "could not lower the priority of an argon2 thread");
    }
}

/// Elsewhere the niceness may be per process: leave it.
#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

/// Run `work` on the argon2 pool (the caller holds a slot). `None` if it failed.
async fn on_pool<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let Some(pool) = POOL.as_ref() else { return tokio::task::spawn_blocking(work).await.ok() };
    let (answer, answered) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = answer.send(work());
    });
    pool.jobs.send(job).ok()?;
    answered.await.ok()
}

pub fn check_policy(password: &str) -> Result<(), PasswordError> {
    let len = password.chars().count();
    if (MIN_LEN..=MAX_LEN).contains(&len) { Ok(()) } else { Err(PasswordError::Length) }
}

/// Hash on the current thread (CLI use).
pub fn hash_blocking(password: &str) -> Result<String, PasswordError> {
    check_policy(password)?;
    Argon2::default().hash_password(password.as_bytes()).map(|h| h.to_string()).map_err(|_| PasswordError::Hashing)
}

/// Start the argon2 threads and compute the dummy hash now, so the first unknown-user login is
/// not faster than the rest.
pub async fn warm_up() {
    let Ok(_slot) = SLOTS.acquire().await else { return };
    let _ = on_pool(|| DUMMY_HASH.len()).await;
}

/// Verify `password` against `phc`, or against the dummy hash when there is no user.
/// Returns true only for a real hash that matches.
pub async fn verify(password: String, phc: Option<String>) -> bool {
    let Ok(_slot) = SLOTS.acquire().await else { return false };
    on_pool(move || {
        let real = phc.is_some();
        let target = phc.unwrap_or_else(|| DUMMY_HASH.clone());
        let ok = password.len() <= MAX_LEN * 4
            && Argon2::default().verify_password(password.as_bytes(), target.as_str()).is_ok();
        ok && real
    })
    .await
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_and_verify() {
        let h = hash_blocking("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify("correct horse battery".into(), Some(h.clone())).await);
        assert!(!verify("wrong".into(), Some(h)).await);
        assert!(!verify("tessera dummy password for unknown users".into(), None).await);
        assert!(hash_blocking("short").is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn verifications_run_on_the_pool_at_a_lower_priority() {
        #[cfg(target_os = "linux")]
        let own = || rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap();
        #[cfg(target_os = "linux")]
        let before = own();
        warm_up().await;
        let names = futures_util::future::join_all((0..pool_size() * 3).map(|_| async {
            let _slot = SLOTS.acquire().await.unwrap();
            on_pool(|| std::thread::current().name().map(str::to_owned)).await.unwrap()
        }))
        .await;
        assert!(names.iter().all(|n| n.as_deref().is_some_and(|n| n.starts_with("tessera-argon2-"))), "{names:?}");
        #[cfg(target_os = "linux")]
        {
            let nice = on_pool(|| rustix::process::getpriority_process(Some(rustix::thread::gettid()))).await;
            assert!(nice.unwrap().unwrap() >= NICENESS);
            assert_eq!(own(), before, "only the pool's threads are lowered");
        }
        // A panicking job fails its caller, and the pool goes on.
        assert_eq!(on_pool(|| -> u8 { panic!("boom") }).await, None);
        assert!(!verify("wrong".into(), Some(hash_blocking("correct horse battery").unwrap())).await);
    }
}
