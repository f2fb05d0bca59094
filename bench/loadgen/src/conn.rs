//! One keep-alive HTTP/1.1 connection per worker (hyper's connection API, no pool), so every
//! worker holds exactly one connection for the whole workload and the client costs little CPU.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, Result};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A request as a workload describes it: a path on the server, an optional body with its
/// content type, and any other headers.
#[derive(Clone, Debug)]
pub struct Req {
    pub method: Method,
    pub path: String,
    pub body: Option<(Bytes, HeaderValue)>,
    pub authorization: Option<HeaderValue>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Req {
    pub fn get(path: &str) -> Self {
        Self { method: Method::GET, path: path.to_owned(), body: None, authorization: None, headers: Vec::new() }
    }

    pub fn post_form(path: &str, form: String, authorization: Option<HeaderValue>) -> Self {
        let content_type = HeaderValue::from_static("application/x-www-form-urlencoded");
        Self {
            method: Method::POST,
            path: path.to_owned(),
            body: Some((Bytes::from(form), content_type)),
            authorization,
            headers: Vec::new(),
        }
    }

    /// A POST with a JSON body (an MCP request).
    pub fn post_json(
        path: &str,
        json: Bytes,
        authorization: Option<HeaderValue>,
        headers: Vec<(HeaderName, HeaderValue)>,
    ) -> Self {
        let content_type = HeaderValue::from_static("application/json");
        Self { method: Method::POST, path: path.to_owned(), body: Some((json, content_type)), authorization, headers }
    }
}

pub struct Conn {
    addr: SocketAddr,
    host: HeaderValue,
    sender: SendRequest<Full<Bytes>>,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Conn {
    pub async fn connect(addr: SocketAddr, host: &str) -> Result<Self> {
        let sender = handshake(addr).await?;
        Ok(Self { addr, host: HeaderValue::from_str(host)?, sender })
    }

    /// Replace a connection the server closed or that failed.
    pub async fn reconnect(&mut self) -> Result<()> {
        self.sender = handshake(self.addr).await?;
        Ok(())
    }

    /// Send one request and read the whole response body.
    pub async fn send(&mut self, req: &Req) -> Result<(StatusCode, Bytes)> {
        let (status, _, body) = self.send_full(req).await?;
        Ok((status, body))
    }

    /// The same, also returning the response headers (redirects and cookies of the login pages).
    pub async fn send_full(&mut self, req: &Req) -> Result<(StatusCode, HeaderMap, Bytes)> {
        let mut builder = Request::builder().method(req.method.clone()).uri(&req.path).header(HOST, &self.host);
        if let Some(auth) = &req.authorization {
            builder = builder.header(AUTHORIZATION, auth);
        }
        for (name, value) in &req.headers {
            builder = builder.header(name, value);
        }
        let body = match &req.body {
            Some((body, content_type)) => {
                builder = builder.header(CONTENT_TYPE, content_type);
                Full::new(body.clone())
            }
            None => Full::new(Bytes::new()),
        };
        let request = builder.body(body)?;
        self.sender.ready().await.context("connection not ready")?;
        let res = self.sender.send_request(request).await.context("send")?;
        let (parts, body) = res.into_parts();
        let body = body.collect().await.context("read body")?.to_bytes();
        Ok((parts.status, parts.headers, body))
    }
}

async fn handshake(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .context("connect timed out")?
        .with_context(|| format!("connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // Ends when the server closes the connection or the sender is dropped.
        let _ = conn.await;
    });
    Ok(sender)
}
