//! Group commit for short writes. Requests that each need one small write (rotate a refresh
//! token, revoke a grant) are gathered while the previous batch is being written, then written
//! together by one statement: one transaction, one WAL flush, and one turn at PostgreSQL's
//! notification-queue lock, which every transaction that sends a `NOTIFY` holds through its
//! commit and which otherwise makes such commits wait for each other one by one. Each request is
//! answered with its own outcome, only after the batch has committed: nothing is acknowledged
//! before it is durable.
//!
//! A batch whose statement fails is not failed as a whole: the job does its requests one by one
//! (so one bad request cannot fail its neighbours, and each gets its own error). When no worker
//! runs (outside a runtime, or after shutdown), [`Batcher::submit`] hands the request back and
//! the caller writes it alone.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};

type Pending<Req, Resp> = (Req, oneshot::Sender<Resp>);

pub struct Batcher<Req, Resp> {
    tx: Option<mpsc::Sender<Pending<Req, Resp>>>,
}

impl<Req, Resp> Batcher<Req, Resp>
where
    Req: Clone + Send + 'static,
    Resp: Send + 'static,
{
    /// `workers` batches may be in flight at once (while one commits, the next gathers), each of
    /// at most `max` requests. `job` answers a batch, one answer per request, in order.
    pub fn start<F, Fut>(workers: usize, max: usize, job: F) -> Self
    where
        F: Fn(Vec<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<Resp>> + Send + 'static,
    {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Self { tx: None };
        };
        let (tx, rx) = mpsc::channel(max.max(1) * workers.max(1) * 2);
        let rx = Arc::new(Mutex::new(rx));
        let job = Arc::new(job);
        for _ in 0..workers.max(1) {
            runtime.spawn(work(Arc::clone(&rx), Arc::clone(&job), max.max(1)));
        }
        Self { tx: Some(tx) }
    }

    /// Answer `req` in the next batch; `Err(req)` when no batch can take it, for the caller to
    /// do alone.
    pub async fn submit(&self, req: Req) -> Result<Resp, Req> {
        let Some(tx) = &self.tx else { return Err(req) };
        let (reply, answer) = oneshot::channel();
        if let Err(mpsc::error::SendError((req, _))) = tx.send((req.clone(), reply)).await {
            return Err(req);
        }
        // A worker that vanished mid-batch (a panic in the job) drops the reply.
        answer.await.map_err(|_| req)
    }
}

async fn work<Req, Resp, F, Fut>(rx: Arc<Mutex<mpsc::Receiver<Pending<Req, Resp>>>>, job: Arc<F>, max: usize)
where
    F: Fn(Vec<Req>) -> Fut,
    Fut: Future<Output = Vec<Resp>>,
{
    loop {
        let mut batch = Vec::new();
        {
            let mut rx = rx.lock().await;
            match rx.recv().await {
                Some(first) => batch.push(first),
                None => return,
            }
            while batch.len() < max {
                match rx.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
        }
        let (requests, replies): (Vec<Req>, Vec<oneshot::Sender<Resp>>) = batch.into_iter().unzip();
        let answers = job(requests).await;
        for (answer, reply) in answers.into_iter().zip(replies) {
            let _ = reply.send(answer);
        }
    }
}

/// When a batch failed because the database cannot be reached, the same failure for each of
/// its `n` requests (redoing them one by one would make each wait out the pool again); `None`
/// for any other failure, which the requests must meet one by one.
pub fn unreachable_for_each(e: &sqlx::Error, n: usize) -> Option<Vec<sqlx::Error>> {
    let again = || match e {
        sqlx::Error::PoolTimedOut => Some(sqlx::Error::PoolTimedOut),
        sqlx::Error::PoolClosed => Some(sqlx::Error::PoolClosed),
        sqlx::Error::Io(io) => Some(sqlx::Error::Io(std::io::Error::new(io.kind(), io.to_string()))),
        _ => None,
    };
    (0..n).map(|_| again()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn answers_each_request_with_its_own_result_and_gathers_concurrent_ones() {
        let batches = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&batches);
        let batcher = Arc::new(Batcher::start(1, 64, move |reqs: Vec<u32>| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                reqs.into_iter().map(|r| r * 2).collect::<Vec<_>>()
            }
        }));
        let handles: Vec<_> = (0..100u32)
            .map(|i| {
                let b = Arc::clone(&batcher);
                tokio::spawn(async move { (i, b.submit(i).await) })
            })
            .collect();
        for h in handles {
            let (i, answer) = h.await.unwrap();
            assert_eq!(answer, Ok(i * 2));
        }
        let n = batches.load(Ordering::SeqCst);
        assert!(n < 100, "100 concurrent requests went in {n} batches: nothing was gathered");
    }

    #[test]
    fn outside_a_runtime_it_hands_the_request_back() {
        let batcher = Batcher::start(2, 8, |reqs: Vec<u32>| async move { reqs });
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        assert_eq!(rt.block_on(batcher.submit(3)), Err(3));
    }
}
