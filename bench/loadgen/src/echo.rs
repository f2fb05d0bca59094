//! `tessera-loadgen mcp-echo`: the upstream of the gateway benchmark. A minimal MCP server
//! (Streamable HTTP, stateless, JSON answers, no auth) on hyper: `initialize`, `tools/list` with
//! one tool, `echo`, and `tools/call` of `echo`, which answers its `text` argument as text
//! content. It parses every body as a real server would, and otherwise does as little as possible,
//! so that what the benchmark measures is the gateway, not the upstream.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

#[derive(clap::Args)]
pub struct EchoArgs {
    /// Loopback address and port to listen on.
    #[arg(long)]
    listen: SocketAddr,
    /// Runtime worker threads (default: one per core, as a tokio server has).
    #[arg(long)]
    threads: Option<usize>,
    /// Exit after this many seconds whatever happens (the benchmark stops it long before).
    #[arg(long, default_value_t = 3600)]
    exit_after: u64,
}

/// Largest request body read.
const MAX_BODY: usize = 1024 * 1024;

pub fn main(args: EchoArgs) -> Result<()> {
    if !args.listen.ip().is_loopback() {
        bail!("--listen must be a loopback address, not {}", args.listen);
    }
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads.clamp(1, 64)).enable_all().build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        eprintln!("[mcp-echo] listening on {} ({threads} threads)", args.listen);
        let accept = async {
            loop {
                let (stream, _) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of descriptors and the like: wait rather than spin.
                        eprintln!("[mcp-echo] accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(handle);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        };
        tokio::select! {
            () = accept => {}
            () = tokio::time::sleep(Duration::from_secs(args.exit_after)) => {
                eprintln!("[mcp-echo] exiting after {} s", args.exit_after);
            }
        }
        Ok(())
    })
}

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() == Method::GET && req.uri().path() == "/healthz" {
        // For the benchmark script to wait on; not part of MCP.
        return Ok(Response::new(Full::new(Bytes::from_static(b"ok"))));
    }
    if req.method() != Method::POST {
        // No server-initiated stream and no sessions: GET and DELETE are not supported.
        let mut res = Response::new(Full::new(Bytes::new()));
        *res.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        res.headers_mut().insert(ALLOW, HeaderValue::from_static("POST"));
        return Ok(res);
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return Ok(json_response(StatusCode::PAYLOAD_TOO_LARGE, &rpc_error(Value::Null, -32600, "too large")));
        }
    };
    let Ok(message) = serde_json::from_slice::<Value>(&body) else {
        return Ok(json_response(StatusCode::BAD_REQUEST, &rpc_error(Value::Null, -32700, "parse error")));
    };
    let Some(id) = message.get("id").cloned() else {
        // A notification or a response: accepted, nothing to answer.
        let mut res = Response::new(Full::new(Bytes::new()));
        *res.status_mut() = StatusCode::ACCEPTED;
        return Ok(res);
    };
    let answer = match message["method"].as_str() {
        Some("tools/call") if message["params"]["name"] == "echo" => {
            let args = &message["params"]["arguments"];
            let text = args["text"].as_str().map_or_else(|| args.to_string(), str::to_owned);
            json!({"jsonrpc": "2.0", "id": id, "result": {"content": [{"type": "text", "text": text}], "isError": false}})
        }
        Some("tools/call") => rpc_error(id, -32602, "unknown tool"),
        Some("tools/list") => json!({"jsonrpc": "2.0", "id": id, "result": {"tools": [{
            "name": "echo",
            "description": "Answers its text argument",
            "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
        }]}}),
        Some("initialize") => json!({"jsonrpc": "2.0", "id": id, "result": {
            "protocolVersion": message["params"]["protocolVersion"].as_str().unwrap_or("2025-06-18"),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "tessera-bench-echo", "version": "0.1.0"},
        }}),
        Some("ping") => json!({"jsonrpc": "2.0", "id": id, "result": {}}),
        _ => rpc_error(id, -32601, "method not found"),
    };
    Ok(json_response(StatusCode::OK, &answer))
}

fn rpc_error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

fn json_response(status: StatusCode, value: &Value) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(value.to_string())));
    *res.status_mut() = status;
    res.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}
