//! A document server on loopback: answers each path with a configured reply (status, type,
//! headers, body, delay, slow drip) and counts the hits. Client ID metadata documents come from it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// What the document server answers on one path.
#[derive(Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    pub delay: Duration,
    /// Send the body in chunks with this pause between them (a slow drip), without Content-Length.
    pub drip: Option<Duration>,
}

impl Reply {
    pub fn json(doc: Value) -> Self {
        Self {
            status: 200,
            content_type: "application/json",
            headers: vec![],
            body: serde_json::to_vec(&doc).unwrap(),
            delay: Duration::ZERO,
            drip: None,
        }
    }
}

#[derive(Clone, Default)]
pub struct DocServer {
    replies: Arc<Mutex<HashMap<String, Reply>>>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

impl DocServer {
    pub async fn start() -> (Self, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        (Self::serve_on(listener), base)
    }

    pub fn serve_on(listener: tokio::net::TcpListener) -> Self {
        let server = Self::default();
        let app = axum::Router::new().fallback(serve).with_state(server.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        server
    }

    pub fn set(&self, path: &str, reply: Reply) {
        self.replies.lock().unwrap().insert(path.to_owned(), reply);
    }

    pub fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

async fn serve(State(server): State<DocServer>, uri: Uri) -> Response {
    let path = uri.path().to_owned();
    *server.hits.lock().unwrap().entry(path.clone()).or_default() += 1;
    let Some(reply) = server.replies.lock().unwrap().get(&path).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    tokio::time::sleep(reply.delay).await;
    let mut headers = HeaderMap::new();
    headers.insert("content-type", reply.content_type.parse().unwrap());
    for (k, v) in &reply.headers {
        headers.insert(*k, v.parse().unwrap());
    }
    let status = StatusCode::from_u16(reply.status).unwrap();
    match reply.drip {
        None => (status, headers, reply.body).into_response(),
        Some(pause) => {
            let chunks: Vec<Vec<u8>> = reply.body.chunks(64).map(<[u8]>::to_vec).collect();
            let stream = async_stream(chunks, pause);
            (status, headers, Body::from_stream(stream)).into_response()
        }
    }
}

fn async_stream(
    chunks: Vec<Vec<u8>>,
    pause: Duration,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        for chunk in chunks {
            if tx.send(Ok(chunk)).await.is_err() {
                return;
            }
            tokio::time::sleep(pause).await;
        }
    });
    tokio_stream_from(rx)
}

fn tokio_stream_from<T: Send + 'static>(mut rx: tokio::sync::mpsc::Receiver<T>) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
