//! `tessera gateway` in front of an MCP server that knows nothing of OAuth: discovery, token and
//! audience checks, per-tool scopes and step-up, `tools/list` filtering (JSON and SSE), per-tool
//! rate limits, the tool-call audit with argument digests, Origin checks, header hygiene, and an
//! SSE stream of 1,000 notifications passed through in order and unbuffered.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tessera::gateway::policy::Policy;
use tessera::gateway::verifier::{Introspector, IssuerKeys, Verifier};
use tessera::gateway::{Gateway, Settings};
use tessera::platform::audit::AuditSink;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::common::TestApp;
use crate::common::flow::ClientSpec;

const POLICY: &str = r#"
resource_name = "Test MCP"
baseline_scope = "mcp"
default = "deny"

[tools]
"search_*" = { scope = "tools:read", rate = "3/1m" }
"delete_file" = { scope = "tools:write" }
"long_task" = { scope = "tools:read" }
"#;

/// An MCP server with no auth at all: it answers tools/list and tools/call, streams progress
/// for `long_task`, and remembers the headers of every request it saw.
#[derive(Clone, Default)]
struct Upstream {
    seen: Arc<Mutex<Vec<HeaderMap>>>,
    /// `long_task` streams its first event, then waits for this before the other 999.
    go_on: Arc<Notify>,
}

impl Upstream {
    async fn start(&self) -> String {
        let app = axum::Router::new().route("/mcp", axum::routing::any(upstream_mcp)).with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/mcp", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    fn calls(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

async fn upstream_mcp(State(up): State<Upstream>, headers: HeaderMap, body: Bytes) -> Response {
    up.seen.lock().unwrap().push(headers.clone());
    let Ok(msg) = serde_json::from_slice::<Value>(&body) else { return StatusCode::ACCEPTED.into_response() };
    let id = msg["id"].clone();
    let sse = headers.get("x-test-sse").is_some();
    match msg["method"].as_str() {
        Some("tools/list") => {
            let tools = json!([{"name": "search_docs"}, {"name": "delete_file"}, {"name": "long_task"}, {"name": "secret_admin"}]);
            let answer = json!({"jsonrpc": "2.0", "id": id, "result": {"tools": tools}});
            if sse {
                ([("content-type", "text/event-stream")], format!("event: message\ndata: {answer}\n\n")).into_response()
            } else {
                axum::Json(answer).into_response()
            }
        }
        Some("tools/call") if msg["params"]["name"] == "long_task" => progress_stream(up, id),
        Some("tools/call") => {
            let text = format!("called {}", msg["params"]["name"].as_str().unwrap_or(""));
            axum::Json(json!({"jsonrpc": "2.0", "id": id, "result": {"content": [{"type": "text", "text": text}]}}))
                .into_response()
        }
        _ => axum::Json(json!({"jsonrpc": "2.0", "id": id, "result": {}})).into_response(),
    }
}

/// 1,000 progress notifications then the result, as server-sent events; the first goes out and
/// the rest wait until the test has received it (so a buffering proxy would never deliver it).
fn progress_stream(up: Upstream, id: Value) -> Response {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        for i in 0..1000 {
            let note = json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 1, "progress": i}});
            if tx.send(Ok(Bytes::from(format!("event: message\ndata: {note}\n\n")))).await.is_err() {
                return;
            }
            if i == 0 {
                up.go_on.notified().await;
            }
        }
        let done = json!({"jsonrpc": "2.0", "id": id, "result": {"content": []}});
        let _ = tx.send(Ok(Bytes::from(format!("event: message\ndata: {done}\n\n")))).await;
    });
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    ([("content-type", "text/event-stream")], Body::from_stream(stream)).into_response()
}

/// Tessera, the upstream, and the gateway between a client and the upstream.
struct Setup {
    tessera: TestApp,
    upstream: Upstream,
    /// The gateway's MCP endpoint, which is also the resource URI.
    endpoint: String,
    origin: String,
    service: (String, String),
    stop: CancellationToken,
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn setup(policy: &str, introspect: bool) -> Setup {
    let tessera = TestApp::spawn().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let endpoint = format!("{origin}/mcp");
    add_gateway_resource(&tessera, &endpoint).await;
    let (id, secret) = tessera.add_client(ClientSpec::service()).await;
    let upstream = Upstream::default();
    let upstream_url = upstream.start().await;
    let verifier = if introspect {
        let (rs_id, rs_secret) = crate::introspection::credentials(&tessera, &endpoint).await;
        Verifier::Introspection(Introspector::discover(&tessera.issuer, &rs_id, &rs_secret).await.unwrap())
    } else {
        let keys = IssuerKeys::new(&tessera.issuer);
        keys.refresh().await.unwrap();
        Verifier::Jwks(keys)
    };
    let settings = Settings {
        upstream: url::Url::parse(&upstream_url).unwrap(),
        resource: endpoint.clone(),
        issuer: tessera.issuer.clone(),
        allowed_origins: vec!["https://app.example.com".into()],
        identity_headers: vec![(tessera::config::IdentityField::Subject, "x-user".parse().unwrap())],
        trusted_proxies: vec![],
    };
    let audit = AuditSink::start(tessera.db.pool.clone());
    let gateway = Arc::new(Gateway::new(settings, Policy::from_toml(policy).unwrap(), verifier, audit));
    let stop = CancellationToken::new();
    tokio::spawn(tessera::gateway::serve(gateway, listener, stop.clone(), Duration::from_secs(5)));
    Setup { tessera, upstream, endpoint, origin, service: (id, secret.unwrap()), stop }
}

/// The gateway's resource in Tessera, with the policy's scopes.
async fn add_gateway_resource(app: &TestApp, uri: &str) {
    let r = tessera::store::resources::Resource {
        id: uuid::Uuid::new_v4(),
        uri: uri.to_owned(),
        name: "Gateway".into(),
        scopes: ["mcp", "tools:read", "tools:write"].into_iter().map(|s| (s.to_owned(), s.to_owned())).collect(),
        default_scopes: vec!["mcp".into()],
        token_ttl: Duration::from_secs(600),
        is_default: false,
        credential_id: None,
        credential_secret_hash: None,
        scope_details: Default::default(),
    };
    tessera::store::resources::add(&app.db.pool, &r).await.unwrap();
    app.state.reload_resources().await;
}

impl Setup {
    async fn token(&self, scope: &str) -> String {
        self.token_for(&self.endpoint, scope).await
    }

    async fn token_for(&self, resource: &str, scope: &str) -> String {
        let form = [("grant_type", "client_credentials"), ("resource", resource), ("scope", scope)];
        let (status, _, body) = self.tessera.token(&form, Some((&self.service.0, &self.service.1))).await;
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    fn post(&self, token: Option<&str>, body: &Value) -> reqwest::RequestBuilder {
        let mut req =
            self.tessera.client.post(&self.endpoint).header("accept", "application/json, text/event-stream").json(body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req
    }

    async fn call(&self, token: &str, tool: &str, arguments: Value) -> reqwest::Response {
        let body = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": tool, "arguments": arguments}});
        self.post(Some(token), &body).send().await.unwrap()
    }

    /// The tool-call audit records, oldest first, once the writer has caught up.
    async fn audit(&self, expected: usize) -> Vec<(String, String, Option<String>, Option<String>)> {
        for _ in 0..100 {
            let rows: Vec<(String, String, Option<String>, Option<String>)> = sqlx::query_as(
                "SELECT event, outcome, digest, detail FROM audit_events WHERE event IN ('tool.call', 'gateway.refused') ORDER BY id",
            )
            .fetch_all(&self.tessera.db.pool)
            .await
            .unwrap();
            if rows.len() >= expected {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("fewer than {expected} audit records");
    }
}

fn header<'a>(res: &'a reqwest::Response, name: &str) -> &'a str {
    res.headers().get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
}

#[tokio::test]
async fn discovery_and_the_401_challenge() {
    let s = setup(POLICY, false).await;
    for path in ["/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"] {
        let doc: Value = reqwest::get(format!("{}{path}", s.origin)).await.unwrap().json().await.unwrap();
        assert_eq!(doc["resource"], s.endpoint.as_str(), "{path}");
        assert_eq!(doc["authorization_servers"], json!([s.tessera.issuer]));
        assert_eq!(doc["scopes_supported"], json!(["mcp", "tools:read", "tools:write"]));
        assert_eq!(doc["bearer_methods_supported"], json!(["header"]));
        assert_eq!(doc["resource_name"], "Test MCP");
    }
    let res = s.post(None, &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize"})).send().await.unwrap();
    assert_eq!(res.status(), 401);
    let challenge = header(&res, "www-authenticate");
    assert_eq!(
        challenge,
        format!("Bearer resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp\", scope=\"mcp\"", s.origin)
    );
    assert!(header(&res, "x-request-id").len() >= 16);
    assert_eq!(s.upstream.calls(), 0);
}

#[tokio::test]
async fn tokens_for_another_resource_and_forged_tokens_are_refused() {
    let s = setup(POLICY, false).await;
    let other = "https://other.example.com/mcp";
    add_gateway_resource(&s.tessera, other).await;
    let token = s.token_for(other, "mcp tools:read").await;
    let res = s.call(&token, "search_docs", json!({})).await;
    assert_eq!(res.status(), 401);
    assert!(header(&res, "www-authenticate").contains("error=\"invalid_token\""));
    let mut forged = s.token("mcp tools:read").await;
    forged.replace_range(forged.len() - 4.., "AAAA");
    assert_eq!(s.call(&forged, "search_docs", json!({})).await.status(), 401);
    assert_eq!(s.upstream.calls(), 0, "a token for another audience is never forwarded");
}

#[tokio::test]
async fn tools_need_their_scopes_and_step_up_works() {
    let s = setup(POLICY, false).await;
    let read = s.token("mcp tools:read").await;
    let res = s.call(&read, "search_docs", json!({"q": "x"})).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["result"]["content"][0]["text"], "called search_docs");
    // A tool the token's scopes do not cover: 403 with the scopes to ask for.
    let res = s.call(&read, "delete_file", json!({"path": "/a"})).await;
    assert_eq!(res.status(), 403);
    let challenge = header(&res, "www-authenticate").to_owned();
    assert!(challenge.contains("error=\"insufficient_scope\""), "{challenge}");
    assert!(challenge.contains("scope=\"mcp tools:read tools:write\""), "held and needed: {challenge}");
    assert!(challenge.contains("resource_metadata="), "{challenge}");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["id"], 7);
    // Step up: a token with the scope gets through.
    let write = s.token("mcp tools:read tools:write").await;
    assert_eq!(s.call(&write, "delete_file", json!({"path": "/a"})).await.status(), 200);
    // The baseline is needed for anything; unnamed tools are denied by default.
    let no_baseline = s.token("tools:read").await;
    assert_eq!(s.call(&no_baseline, "search_docs", json!({})).await.status(), 403);
    let res = s.call(&write, "secret_admin", json!({})).await;
    assert_eq!(res.status(), 403);
    assert!(!header(&res, "www-authenticate").contains("scope="), "no scope helps a tool the policy denies");
    assert_eq!(s.upstream.calls(), 2);
}

#[tokio::test]
async fn tools_list_is_filtered_in_json_and_in_sse() {
    let s = setup(POLICY, false).await;
    let read = s.token("mcp tools:read").await;
    let list = json!({"jsonrpc": "2.0", "id": "l1", "method": "tools/list"});
    let names = |body: &Value| -> Vec<String> {
        body["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_owned()).collect()
    };
    let body: Value = s.post(Some(&read), &list).send().await.unwrap().json().await.unwrap();
    assert_eq!(names(&body), ["search_docs", "long_task"]);
    let res = s.post(Some(&read), &list).header("x-test-sse", "1").send().await.unwrap();
    assert_eq!(header(&res, "content-type"), "text/event-stream");
    let text = res.text().await.unwrap();
    let data = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
    assert_eq!(names(&serde_json::from_str(data).unwrap()), ["search_docs", "long_task"]);
    let all = s.token("mcp tools:read tools:write").await;
    let body: Value = s.post(Some(&all), &list).send().await.unwrap().json().await.unwrap();
    assert_eq!(names(&body), ["search_docs", "delete_file", "long_task"], "secret_admin is never listed");
}

#[tokio::test]
async fn per_tool_rate_limits_stop_before_the_upstream() {
    let s = setup(POLICY, false).await;
    let read = s.token("mcp tools:read").await;
    for _ in 0..3 {
        assert_eq!(s.call(&read, "search_docs", json!({})).await.status(), 200);
    }
    let before = s.upstream.calls();
    let res = s.call(&read, "search_more", json!({})).await;
    assert_eq!(res.status(), 429, "search_* is limited per client as one rule");
    assert!(header(&res, "retry-after").parse::<u64>().unwrap() >= 1);
    let body: Value = res.json().await.unwrap();
    assert_eq!((body["id"].clone(), body["error"]["code"].clone()), (json!(7), json!(-32003)));
    assert_eq!(s.upstream.calls(), before, "the upstream never saw it");
    // Another tool is not limited by that rule.
    assert_eq!(s.call(&read, "long_task", json!({})).await.status(), 200);
}

#[tokio::test]
async fn every_tool_call_is_audited_with_a_canonical_argument_digest() {
    let s = setup(POLICY, false).await;
    let read = s.token("mcp tools:read").await;
    // The same arguments, keys in another order and a number spelled differently.
    s.call(&read, "search_docs", json!({"q": "rust", "limit": 10, "filters": {"b": 1, "a": 2}})).await;
    let same: Value = serde_json::from_str(r#"{"filters":{"a":2,"b":1},"limit":1e1,"q":"rust"}"#).unwrap();
    s.call(&read, "search_docs", same).await;
    s.call(&read, "delete_file", json!({"path": "/etc/passwd"})).await;
    let rows = s.audit(3).await;
    let expected = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(br#"{"filters":{"a":2,"b":1},"limit":10,"q":"rust"}"#))
    };
    assert_eq!(rows[0].2.as_deref(), Some(expected.as_str()), "RFC 8785: sorted keys, shortest numbers");
    assert_eq!(rows[1].2, rows[0].2, "the same arguments hash the same");
    assert_eq!(rows[0].0, "tool.call");
    assert_eq!(rows[0].1, "success");
    let detail = rows[0].3.as_deref().unwrap();
    assert!(detail.starts_with("tool=search_docs outcome=allowed upstream_status=200 latency_ms="), "{detail}");
    assert_eq!(
        (rows[2].1.as_str(), rows[2].3.as_deref()),
        ("denied", Some("tool=delete_file outcome=insufficient_scope"))
    );
    // Never the arguments, never the token.
    let dump: String = sqlx::query_scalar("SELECT string_agg(t::text, ' ') FROM audit_events t")
        .fetch_one(&s.tessera.db.pool)
        .await
        .unwrap();
    assert!(!dump.contains("/etc/passwd") && !dump.contains("rust") && !dump.contains(&read[..40]));
}

#[tokio::test]
async fn origins_headers_and_the_stateless_transport() {
    let s = setup(POLICY, false).await;
    let read = s.token("mcp tools:read").await;
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "search_docs"}});
    let res = s.post(Some(&read), &call).header("origin", "https://evil.example").send().await.unwrap();
    assert_eq!(res.status(), 403, "DNS rebinding protection");
    let res = s.post(Some(&read), &call).header("origin", "https://app.example.com").send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "access-control-allow-origin"), "https://app.example.com");
    // The upstream sees neither the token nor a forged identity; it sees the verified one.
    let ping = json!({"jsonrpc": "2.0", "id": 3, "method": "ping"});
    s.post(Some(&read), &ping).header("x-user", "admin").header("x-forwarded-user", "admin").send().await.unwrap();
    let seen = s.upstream.seen.lock().unwrap().last().unwrap().clone();
    assert!(seen.get("authorization").is_none());
    assert!(seen.get("x-forwarded-user").is_none());
    assert_eq!(seen.get("x-user").unwrap(), s.service.0.as_str(), "the verified subject");
    // Mcp-Method / Mcp-Name must say what the body says.
    let res = s
        .post(Some(&read), &call)
        .header("mcp-method", "tools/call")
        .header("mcp-name", "search_docs")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = s.post(Some(&read), &call).header("mcp-name", "delete_file").send().await.unwrap();
    assert_eq!(res.status(), 400);
    // A batch is checked element by element: one forbidden call refuses it.
    let batch = json!([call, {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "delete_file"}}]);
    assert_eq!(s.post(Some(&read), &batch).send().await.unwrap().status(), 403);
    // Session ids pass (search_* is rate-limited to 3 calls: this one is a ping).
    s.post(Some(&read), &ping).header("mcp-session-id", "abc123").send().await.unwrap();
    assert_eq!(s.upstream.seen.lock().unwrap().last().unwrap().get("mcp-session-id").unwrap(), "abc123");
}

#[tokio::test]
async fn an_sse_stream_of_1000_notifications_arrives_in_order_and_unbuffered() {
    let s = setup(POLICY, false).await;
    let read = s.token("mcp tools:read").await;
    let res = s.call(&read, "long_task", json!({})).await;
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "content-type"), "text/event-stream");
    let mut res = res;
    let mut text = String::new();
    // The first event arrives while the upstream is still holding the rest back.
    while !text.contains("\n\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), res.chunk()).await.expect("unbuffered").unwrap();
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    s.upstream.go_on.notify_one();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), res.chunk()).await.unwrap().unwrap() {
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let progress: Vec<i64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok()?["params"]["progress"].as_i64())
        .collect();
    assert_eq!(progress, (0..1000).collect::<Vec<_>>());
    assert!(text.contains("\"result\""), "the final result follows");
}

#[tokio::test]
async fn with_introspection_a_revoked_token_is_refused_at_once() {
    let s = setup(POLICY, true).await;
    let read = s.token("mcp tools:read").await;
    assert_eq!(s.call(&read, "search_docs", json!({})).await.status(), 200);
    let res = s
        .tessera
        .client
        .post(s.tessera.url("/revoke"))
        .basic_auth(&s.service.0, Some(&s.service.1))
        .form(&[("token", read.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // The short positive cache is the only delay.
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(s.call(&read, "search_docs", json!({})).await.status(), 401);
}

#[tokio::test]
async fn readiness_needs_the_keys_and_the_upstream() {
    let s = setup(POLICY, false).await;
    let res = reqwest::get(format!("{}/readyz", s.origin)).await.unwrap();
    assert_eq!(res.status(), 200);
    // An upstream that does not accept connections.
    let keys = IssuerKeys::new(&s.tessera.issuer);
    keys.refresh().await.unwrap();
    let settings = Settings {
        upstream: url::Url::parse(&format!("http://127.0.0.1:{}/mcp", crate::common::free_port())).unwrap(),
        resource: "http://127.0.0.1:1/mcp".into(),
        issuer: s.tessera.issuer.clone(),
        allowed_origins: vec![],
        identity_headers: vec![],
        trusted_proxies: vec![],
    };
    let gateway = Arc::new(Gateway::new(settings, Policy::open(), Verifier::Jwks(keys), AuditSink::log_only()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(tessera::gateway::serve(gateway, listener, s.stop.clone(), Duration::from_secs(1)));
    let res = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["reason"], "upstream unreachable");
}

#[tokio::test]
async fn shutdown_lets_open_streams_finish() {
    let s = setup(POLICY, false).await;
    let read = s.token("mcp tools:read").await;
    let mut res = s.call(&read, "long_task", json!({})).await;
    let first = tokio::time::timeout(Duration::from_secs(5), res.chunk()).await.unwrap().unwrap().unwrap();
    assert!(std::str::from_utf8(&first).unwrap().contains("\"progress\":0"));
    // SIGTERM arrives while the stream is open...
    s.stop.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(s.tessera.client.get(&s.endpoint).send().await.is_err(), "no new requests are taken");
    // ...and the stream still runs to its end.
    s.upstream.go_on.notify_one();
    let mut text = String::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), res.chunk()).await.unwrap().unwrap() {
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert_eq!(text.matches("notifications/progress").count(), 999);
    assert!(text.contains("\"result\""));
}
