//! The connections Tessera accepts. hyper answers some malformed requests itself, before any
//! service or middleware sees them: a request target over 64 KiB (414), too many or too large
//! header fields (431), a head it cannot parse (400). It sends a bare head with no body, no
//! security headers and no request id.
//!
//! [`Connection`] recognises those answers on their way out (an error status without the
//! `X-Request-Id` that every response of ours carries; hyper closes the connection right after)
//! and sends instead the shape of every other answer: an RFC 6749-style JSON body, the security
//! headers, `Cache-Control: no-store` and a request id, which is logged.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::extract::connect_info::Connected;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::serve::IncomingStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::client_addr::Peer;
use super::headers;

/// A TCP listener whose connections are [`Connection`]s.
pub struct Listener {
    inner: TcpListener,
    https: bool,
}

impl Listener {
    /// `https`: whether the issuer is https (HSTS on the answers made here too).
    pub fn new(inner: TcpListener, https: bool) -> Self {
        Self { inner, https }
    }
}

impl Connected<IncomingStream<'_, Listener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, Listener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

impl axum::serve::Listener for Listener {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Connection, SocketAddr) {
        let (stream, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        (Connection { stream, https: self.https, replacing: None }, addr)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A TCP stream that replaces hyper's own bare error answers with shaped ones.
pub struct Connection {
    stream: TcpStream,
    https: bool,
    replacing: Option<Replacement>,
}

/// Our answer, being written in place of hyper's `original` bytes.
struct Replacement {
    bytes: Vec<u8>,
    written: usize,
    original: usize,
}

impl AsyncRead for Connection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl Connection {
    /// Write our answer in place of `buf`; report `buf` as written once ours is out.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some(r) = self.replacing.as_mut() else { return Poll::Ready(Ok(0)) };
        while r.written < r.bytes.len() {
            match ready!(Pin::new(&mut self.stream).poll_write(cx, &r.bytes[r.written..])) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => r.written += n,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        let original = r.original;
        self.replacing = None;
        Poll::Ready(Ok(original))
    }
}

impl AsyncWrite for Connection {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.replacing.is_none() {
            match shaped_answer(buf, this.https) {
                Some(bytes) => this.replacing = Some(Replacement { bytes, written: 0, original: buf.len() }),
                None => return Pin::new(&mut this.stream).poll_write(cx, buf),
            }
        }
        this.poll_replacement(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // hyper's own answers are a head alone: one slice.
        if let Some(first) = bufs.iter().find(|b| !b.is_empty())
            && (this.replacing.is_some() || shaped_answer(first, this.https).is_some())
        {
            return Pin::new(this).poll_write(cx, first);
        }
        Pin::new(&mut this.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// If `buf` is a whole response head with an error status and no `X-Request-Id` (made by
/// hyper, not by our service), the answer to send instead.
fn shaped_answer(buf: &[u8], https: bool) -> Option<Vec<u8>> {
    let rest = buf.strip_prefix(b"HTTP/1.1 ").or_else(|| buf.strip_prefix(b"HTTP/1.0 "))?;
    let status = StatusCode::from_bytes(rest.get(..3)?).ok()?;
    if !(status.is_client_error() || status.is_server_error()) {
        return None;
    }
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let ours = buf[..end]
        .split(|&b| b == b'\n')
        .any(|line| line.len() > 13 && line[..13].eq_ignore_ascii_case(b"x-request-id:"));
    if ours {
        return None;
    }
    Some(render(status, https))
}

fn render(status: StatusCode, https: bool) -> Vec<u8> {
    let description = match status {
        StatusCode::URI_TOO_LONG => "the request target (URL) is too long",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "the request line or header fields are too large, or too many",
        StatusCode::BAD_REQUEST => "the request could not be parsed as HTTP",
        _ => "the request could not be handled",
    };
    let code = if status.is_server_error() { "server_error" } else { "invalid_request" };
    let body = serde_json::json!({"error": code, "error_description": description}).to_string();
    let request_id = format!("{:032x}", rand::random::<u128>());
    tracing::info!(request_id = %request_id, route = "(unparsed)", status = status.as_u16(), "request refused before routing");

    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    if let Ok(id) = HeaderValue::from_str(&request_id) {
        headers.insert(super::request_id::X_REQUEST_ID.clone(), id);
    }
    headers::apply(&mut headers, https);

    let mut out =
        format!("HTTP/1.1 {} {}\r\n", status.as_u16(), status.canonical_reason().unwrap_or("Error")).into_bytes();
    for (name, value) in &headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(b: &[u8]) -> String {
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[test]
    fn hyper_answers_are_reshaped_ours_are_not() {
        let hyper = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: Fri, 04 Dec 2026 15:29:36 GMT\r\n\r\n";
        let shaped = text(&shaped_answer(hyper, true).unwrap());
        assert!(shaped.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"), "{shaped}");
        for expected in [
            "x-request-id: ",
            "content-type: application/json",
            "cache-control: no-store",
            "x-frame-options: DENY",
            "content-security-policy: ",
            "strict-transport-security: ",
            "connection: close",
        ] {
            assert!(shaped.contains(expected), "{expected} missing in {shaped}");
        }
        let (head, body) = shaped.split_once("\r\n\r\n").unwrap();
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"], "invalid_request");
        assert!(head.contains(&format!("content-length: {}", body.len())));
        // Ours carry a request id, and successes and 1xx are never touched.
        assert!(shaped_answer(shaped.as_bytes(), true).is_none());
        assert!(shaped_answer(b"HTTP/1.1 400 Bad Request\r\nX-Request-Id: abc\r\n\r\n", false).is_none());
        assert!(shaped_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", false).is_none());
        assert!(shaped_answer(b"HTTP/1.1 100 Continue\r\n\r\n", false).is_none());
        // A body chunk or a partial head is not a head.
        assert!(shaped_answer(b"{\"error\":\"x\"}", false).is_none());
        assert!(shaped_answer(b"HTTP/1.1 414 URI Too Long\r\nconnection: close\r\n", false).is_none());
        assert!(
            !text(&shaped_answer(b"HTTP/1.1 414 URI Too Long\r\n\r\n", false).unwrap()).contains("strict-transport")
        );
    }
}
