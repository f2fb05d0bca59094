//! Rewriting one JSON-RPC message inside a stream of server-sent events, event by event, as it
//! passes: nothing is held back but the event being read (bounded), so a stream is never
//! buffered. Used to filter the answer to `tools/list`.

use axum::body::{Body, Bytes};
use futures_util::StreamExt as _;
use serde_json::Value;

/// The largest single event the gateway will hold while it looks for the end of it.
const MAX_EVENT: usize = 16 * 1024 * 1024;

/// `body`, with `rewrite` applied to the JSON-RPC message of each event that carries one.
/// An event over [`MAX_EVENT`] ends the stream (it cannot be checked, so it is not passed on).
pub fn rewrite_events(body: Body, rewrite: impl Fn(&mut Value) -> bool + Send + 'static) -> Body {
    let stream = body.into_data_stream();
    let state = (stream, Vec::<u8>::new(), rewrite, false);
    let events = futures_util::stream::unfold(state, |(mut stream, mut pending, rewrite, done)| async move {
        if done {
            return None;
        }
        loop {
            if let Some(end) = event_end(&pending) {
                let event: Vec<u8> = pending.drain(..end).collect();
                let out = rewrite_event(&event, &rewrite);
                return Some((Ok::<Bytes, std::io::Error>(out), (stream, pending, rewrite, false)));
            }
            match stream.next().await {
                Some(Ok(chunk)) if pending.len() + chunk.len() <= MAX_EVENT => pending.extend_from_slice(&chunk),
                Some(Ok(_)) => {
                    tracing::warn!("an upstream event exceeds 16 MiB; ending the stream");
                    return None;
                }
                Some(Err(e)) => return Some((Err(std::io::Error::other(e)), (stream, pending, rewrite, true))),
                // The upstream ended: whatever is left is the last (unterminated) event.
                None if pending.is_empty() => return None,
                None => {
                    let out = rewrite_event(&pending, &rewrite);
                    return Some((Ok(out), (stream, Vec::new(), rewrite, true)));
                }
            }
        }
    });
    Body::from_stream(events)
}

/// Where the first complete event (with its blank line) ends.
fn event_end(buf: &[u8]) -> Option<usize> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|p| p + 2);
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// One event: its `data:` lines joined are a JSON message; when `rewrite` changes it, the event
/// is written again with the new message on one `data:` line (other fields kept).
fn rewrite_event(event: &[u8], rewrite: &impl Fn(&mut Value) -> bool) -> Bytes {
    let Ok(text) = std::str::from_utf8(event) else { return Bytes::copy_from_slice(event) };
    let lines: Vec<&str> = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).collect();
    let data: Vec<&str> =
        lines.iter().filter_map(|l| l.strip_prefix("data:").map(|d| d.strip_prefix(' ').unwrap_or(d))).collect();
    if data.is_empty() {
        return Bytes::copy_from_slice(event);
    }
    let Ok(mut message) = serde_json::from_str::<Value>(&data.join("\n")) else {
        return Bytes::copy_from_slice(event);
    };
    if !rewrite(&mut message) {
        return Bytes::copy_from_slice(event);
    }
    let mut out = String::with_capacity(event.len());
    let mut wrote_data = false;
    for line in lines.iter().filter(|l| !l.is_empty()) {
        if line.starts_with("data:") {
            if !wrote_data {
                out.push_str("data: ");
                out.push_str(&message.to_string());
                out.push('\n');
                wrote_data = true;
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push('\n');
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(chunks: Vec<&'static str>) -> String {
        let stream = futures_util::stream::iter(chunks.into_iter().map(|c| Ok::<_, std::io::Error>(Bytes::from(c))));
        let body = rewrite_events(Body::from_stream(stream), |m: &mut Value| {
            if m["id"] != 2 {
                return false;
            }
            m["result"]["tools"].as_array_mut().unwrap().retain(|t| t["name"] != "secret");
            true
        });
        String::from_utf8(axum::body::to_bytes(body, usize::MAX).await.unwrap().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn only_the_matching_message_changes_and_events_split_anywhere() {
        let out = run(vec![
            "event: message\nid: 1\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n",
            "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"tools\":",
            "[{\"name\":\"open\"},{\"name\":\"secret\"}]}}\n\n: a comment\n\n",
        ])
        .await;
        assert!(
            out.starts_with("event: message\nid: 1\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n"),
            "{out}"
        );
        assert!(out.contains("\"open\"") && !out.contains("secret"), "{out}");
        assert!(out.ends_with(": a comment\n\n"), "{out}");
    }

    #[tokio::test]
    async fn multi_line_data_and_crlf() {
        let out = run(vec![
            "data: {\"jsonrpc\":\"2.0\",\r\ndata: \"id\":2,\"result\":{\"tools\":[{\"name\":\"secret\"}]}}\r\n\r\n",
        ])
        .await;
        assert_eq!(out, "data: {\"id\":2,\"jsonrpc\":\"2.0\",\"result\":{\"tools\":[]}}\n\n");
    }
}
