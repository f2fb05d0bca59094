//! Abuse resistance: rate limits, login throttling across instances (parallel guesses reserved
//! before they are checked), hostile input (over-long URLs and headers included), headers and
//! CORS, the audit log, metrics, and no secret at rest or in the logs.

use std::io::{Read as _, Write as _};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::flow::{
    Browser, ClientSpec, PASSWORD, REDIRECT, RESOURCE, authorize_url, code_and_tokens, hidden, location, pkce,
};
use crate::common::{Options, TestApp};

fn settings(pairs: &[(&'static str, &str)]) -> Options {
    Options { settings: pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(), ..Default::default() }
}

#[tokio::test]
async fn token_rate_limits_per_address_and_per_client_are_reached_and_recover() {
    let app = TestApp::spawn_with(settings(&[("TESSERA_RATE_LIMIT_TOKEN", "3/2s,1000/1m")])).await;
    app.add_resource(RESOURCE, true).await;
    let (id, secret) = app.add_client(ClientSpec::service()).await;
    let secret = secret.unwrap();
    for _ in 0..3 {
        assert_eq!(app.token(&[("grant_type", "client_credentials")], Some((&id, &secret))).await.0, 200);
    }
    let (status, headers, body) = app.token(&[("grant_type", "client_credentials")], Some((&id, &secret))).await;
    assert_eq!(status, 429);
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry));
    assert!(body["error"].is_string() && body["error_description"].is_string(), "RFC 6749-shaped: {body}");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(app.token(&[("grant_type", "client_credentials")], Some((&id, &secret))).await.0, 200, "recovered");

    // Per client: two clients from one address, the limited one is refused alone.
    let app = TestApp::spawn_with(settings(&[("TESSERA_RATE_LIMIT_TOKEN", "1000/1m,2/2s")])).await;
    app.add_resource(RESOURCE, true).await;
    let spec = || ClientSpec::service();
    let (a, a_secret) = app.add_client(spec()).await;
    let (b, b_secret) = app.add_client(spec()).await;
    let (a_secret, b_secret) = (a_secret.unwrap(), b_secret.unwrap());
    for _ in 0..2 {
        assert_eq!(app.token(&[("grant_type", "client_credentials")], Some((&a, &a_secret))).await.0, 200);
    }
    assert_eq!(app.token(&[("grant_type", "client_credentials")], Some((&a, &a_secret))).await.0, 429);
    // Guessing a's secret counts against a as well.
    assert_eq!(app.token(&[("grant_type", "client_credentials")], Some((&a, "guess"))).await.0, 429);
    assert_eq!(app.token(&[("grant_type", "client_credentials")], Some((&b, &b_secret))).await.0, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(app.token(&[("grant_type", "client_credentials")], Some((&a, &a_secret))).await.0, 200, "recovered");
}

#[tokio::test]
async fn browser_routes_answer_429_with_a_page() {
    let app = TestApp::spawn_with(settings(&[("TESSERA_RATE_LIMIT_BROWSER", "3/3s")])).await;
    let f = app.fixture().await;
    let browser = Browser::new(&app);
    for _ in 0..3 {
        assert_eq!(browser.get(&authorize_url(&app, &f.client_id, REDIRECT, &pkce(), &[])).await.status(), 303);
    }
    let res = browser.get(&app.url("/login")).await;
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(res.text().await.unwrap().contains("Try again in"));
}

#[tokio::test]
async fn forwarded_addresses_count_only_from_trusted_proxies() {
    // Not trusted: X-Forwarded-For is ignored, every request is the loopback peer.
    let app = TestApp::spawn_with(settings(&[("TESSERA_RATE_LIMIT_INTROSPECT", "2/1m,1000/1m")])).await;
    for (i, expected) in [(1, 401), (2, 401), (3, 429)] {
        let res = app
            .client
            .post(app.url("/introspect"))
            .header("x-forwarded-for", format!("203.0.113.{i}"))
            .form(&[("token", "x")])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), expected, "request {i}");
    }
    // Trusted loopback proxy: each forwarded address has its own budget.
    let app = TestApp::spawn_with(settings(&[
        ("TESSERA_RATE_LIMIT_INTROSPECT", "2/1m,1000/1m"),
        ("TESSERA_TRUSTED_PROXIES", "127.0.0.1/32, ::1"),
    ]))
    .await;
    for i in 1..=4 {
        let res = app
            .client
            .post(app.url("/introspect"))
            .header("x-forwarded-for", format!("203.0.113.{i}"))
            .form(&[("token", "x")])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "request {i} from its own address");
    }
}

/// POST a login form from `source` (through the trusted loopback proxy).
async fn login_from(
    app: &TestApp,
    browser: &Browser<'_>,
    username: &str,
    password: &str,
    source: &str,
) -> (StatusCode, String) {
    let page = browser.get(&app.url("/login")).await.text().await.unwrap();
    let csrf = crate::common::flow::hidden(&page, "csrf_token");
    let res = browser
        .http
        .post(app.url("/login"))
        .header("sec-fetch-site", "same-origin")
        .header("x-forwarded-for", source)
        .form(&[("username", username), ("password", password), ("csrf_token", csrf.as_str())])
        .send()
        .await
        .unwrap();
    let status = res.status();
    let body = res.text().await.unwrap();
    let message = body.lines().find(|l| l.contains("class=\"error\"")).unwrap_or_default().to_owned();
    (status, message)
}

#[tokio::test]
async fn login_throttling_holds_across_instances_and_spares_clean_sources() {
    let opts = || {
        settings(&[
            ("TESSERA_TRUSTED_PROXIES", "127.0.0.1/32"),
            ("TESSERA_LOGIN_MAX_FAILURES", "3"),
            ("TESSERA_LOGIN_SOURCE_MAX_FAILURES", "100"),
            ("TESSERA_RATE_LIMIT_BROWSER", "1000/1m"),
        ])
    };
    let a = TestApp::spawn_with(opts()).await;
    let b = TestApp::spawn_on(a.db.clone(), Options { issuer: Some(a.issuer.clone()), ..opts() }).await;
    a.fixture().await;
    let attacker = "203.0.113.66";
    let victim_home = "198.51.100.7";
    let ba = Browser::new(&a);
    let bb = Browser::new(&b);
    // Three failures on instance A...
    for _ in 0..3 {
        assert_eq!(login_from(&a, &ba, "alice", "wrong password", attacker).await.0, 401);
    }
    // ...throttle the pair on instance B, even with the right password.
    let (status, message) = login_from(&b, &bb, "alice", PASSWORD, attacker).await;
    assert_eq!(status, 429, "{message}");
    assert!(message.contains("Try again in"));
    // An unknown account is treated exactly alike.
    for _ in 0..3 {
        login_from(&a, &ba, "nobody", "wrong password", attacker).await;
    }
    let (status_unknown, message_unknown) = login_from(&b, &bb, "nobody", "whatever", attacker).await;
    assert_eq!(status_unknown, 429);
    assert_eq!(message_unknown.split("Try again").next(), message.split("Try again").next());
    // The person, from their own network, still gets in.
    let (status, _) = login_from(&b, &bb, "alice", PASSWORD, victim_home).await;
    assert_eq!(status, 303, "a clean source is not locked out");
    // The interval grows with each further failure once it has passed.
    let blocked: Vec<(i32, Option<chrono::DateTime<chrono::Utc>>)> =
        sqlx::query_as("SELECT failures, blocked_until FROM login_failures WHERE account = 'alice'")
            .fetch_all(&a.db.pool)
            .await
            .unwrap();
    assert_eq!(blocked.len(), 1, "the victim's successful login left no row for its source");
    assert_eq!(blocked[0].0, 3);
}

#[tokio::test]
async fn a_flood_from_one_source_is_limited_across_accounts() {
    let app = TestApp::spawn_with(settings(&[
        ("TESSERA_TRUSTED_PROXIES", "127.0.0.1/32"),
        ("TESSERA_LOGIN_MAX_FAILURES", "100"),
        ("TESSERA_LOGIN_SOURCE_MAX_FAILURES", "5"),
        ("TESSERA_RATE_LIMIT_BROWSER", "1000/1m"),
    ]))
    .await;
    app.fixture().await;
    let browser = Browser::new(&app);
    for i in 0..5 {
        assert_eq!(login_from(&app, &browser, &format!("user{i}"), "wrong password", "203.0.113.9").await.0, 401);
    }
    assert_eq!(login_from(&app, &browser, "alice", PASSWORD, "203.0.113.9").await.0, 429);
    assert_eq!(login_from(&app, &browser, "alice", PASSWORD, "203.0.113.10").await.0, 303);
}

/// `n` login attempts for `username(i)` with a wrong password, all at once from `source` (through
/// the trusted loopback proxy), spread over the given instances. The status of each.
async fn parallel_guesses(apps: &[&TestApp], n: usize, username: impl Fn(usize) -> String, source: &str) -> Vec<u16> {
    // One browser per instance, each with its CSRF token; every guess is a whole form POST.
    let mut forms = Vec::new();
    for app in apps {
        let browser = Browser::new(app);
        let page = browser.get(&app.url("/login")).await.text().await.unwrap();
        forms.push((browser.http.clone(), app.url("/login"), hidden(&page, "csrf_token")));
    }
    let guesses = (0..n).map(|i| {
        let (http, url, csrf) = forms[i % forms.len()].clone();
        let username = username(i);
        let source = source.to_owned();
        async move {
            http.post(url)
                .header("sec-fetch-site", "same-origin")
                .header("x-forwarded-for", source)
                .form(&[("username", username.as_str()), ("password", "wrong password"), ("csrf_token", &csrf)])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    futures_util::future::join_all(guesses).await
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

/// How many passwords were checked: one `login.failure` audit record per argon2 verification
/// that failed (the audit writer is asynchronous, so wait for it to settle).
async fn failures_checked(app: &TestApp) -> i64 {
    let mut last = -1;
    for _ in 0..50 {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE event = 'login.failure'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
        if n == last {
            return n;
        }
        last = n;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    last
}

fn throttle_settings() -> Options {
    settings(&[
        ("TESSERA_TRUSTED_PROXIES", "127.0.0.1/32"),
        ("TESSERA_LOGIN_MAX_FAILURES", "5"),
        ("TESSERA_RATE_LIMIT_BROWSER", "1000/1m"),
    ])
}

#[tokio::test]
async fn parallel_guesses_for_one_account_are_reserved_before_they_are_checked() {
    let app = TestApp::spawn_with(throttle_settings()).await;
    app.fixture().await;
    let statuses = parallel_guesses(&[&app], 50, |_| "alice".into(), "203.0.113.50").await;
    let (checked, refused) = (count(&statuses, 401), count(&statuses, 429));
    assert_eq!(checked + refused, 50, "only 401 and 429: {statuses:?}");
    assert!((1..=5).contains(&checked), "at most LOGIN_MAX_FAILURES guesses may be checked, {checked} were");
    assert_eq!(failures_checked(&app).await, checked as i64, "one argon2 verification per 401");
    // Lockout is no lever against the person: the right password from elsewhere still works.
    let browser = Browser::new(&app);
    let page = browser.get(&app.url("/login")).await.text().await.unwrap();
    let res = browser
        .http
        .post(app.url("/login"))
        .header("sec-fetch-site", "same-origin")
        .header("x-forwarded-for", "198.51.100.20")
        .form(&[("username", "alice"), ("password", PASSWORD), ("csrf_token", &hidden(&page, "csrf_token"))])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303, "signed in: on to the account page");
}

#[tokio::test]
async fn parallel_guesses_on_two_instances_share_one_reservation() {
    let a = TestApp::spawn_with(throttle_settings()).await;
    let b = TestApp::spawn_on(a.db.clone(), Options { issuer: Some(a.issuer.clone()), ..throttle_settings() }).await;
    a.fixture().await;
    let statuses = parallel_guesses(&[&a, &b], 50, |_| "alice".into(), "203.0.113.51").await;
    let checked = count(&statuses, 401);
    assert_eq!(checked + count(&statuses, 429), 50, "{statuses:?}");
    assert!((1..=5).contains(&checked), "two instances checked {checked} guesses together");
    assert_eq!(failures_checked(&a).await, checked as i64);
}

#[tokio::test]
async fn parallel_guesses_across_accounts_meet_the_source_limit() {
    let app = TestApp::spawn_with(settings(&[
        ("TESSERA_TRUSTED_PROXIES", "127.0.0.1/32"),
        ("TESSERA_LOGIN_MAX_FAILURES", "100"),
        ("TESSERA_LOGIN_SOURCE_MAX_FAILURES", "10"),
        ("TESSERA_RATE_LIMIT_BROWSER", "1000/1m"),
    ]))
    .await;
    app.fixture().await;
    let statuses = parallel_guesses(&[&app], 50, |i| format!("user{i}"), "203.0.113.52").await;
    let checked = count(&statuses, 401);
    assert_eq!(checked + count(&statuses, 429), 50, "{statuses:?}");
    assert!((1..=10).contains(&checked), "the source limit let {checked} guesses through");
}

#[tokio::test]
async fn refusals_of_a_blocked_account_do_not_count_against_its_source() {
    let app = TestApp::spawn_with(settings(&[
        ("TESSERA_TRUSTED_PROXIES", "127.0.0.1/32"),
        ("TESSERA_LOGIN_MAX_FAILURES", "2"),
        ("TESSERA_LOGIN_SOURCE_MAX_FAILURES", "50"),
        ("TESSERA_RATE_LIMIT_BROWSER", "1000/1m"),
    ]))
    .await;
    app.fixture().await;
    let source = "203.0.113.53";
    // Two failures block the pair (for a second); the guesses at once after it are refused.
    let mut statuses = Vec::new();
    for _ in 0..2 {
        statuses.extend(parallel_guesses(&[&app], 1, |_| "alice".into(), source).await);
    }
    statuses.extend(parallel_guesses(&[&app], 20, |_| "alice".into(), source).await);
    let (checked, refused) = (count(&statuses, 401), count(&statuses, 429));
    assert_eq!(checked + refused, 22, "{statuses:?}");
    assert!(refused >= 1, "the pair was blocked: {statuses:?}");
    // The reservation counted each refused guess for the source, then gave it back.
    let attempts: i32 = sqlx::query_scalar("SELECT attempts FROM login_sources WHERE source = $1::inet")
        .bind(source)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(attempts as usize, checked, "only the {checked} checked guesses count against the source");
}

#[tokio::test]
async fn hostile_input_never_gets_a_500() {
    let app = TestApp::spawn().await;
    let f = app.fixture().await;
    let post = |path: &str, ct: &str, body: Vec<u8>| {
        app.client.post(app.url(path)).header("content-type", ct.to_owned()).body(body).send()
    };
    let form = "application/x-www-form-urlencoded";
    let many: String = (0..10_000).map(|i| format!("p{i}=1&")).collect();
    let repeated: String = "scope=a&".repeat(5000);
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("/token", form, b"grant_type=client_credentials&client_id=%00".to_vec()),
        ("/token", form, b"grant_type=refresh_token&refresh_token=a%00b&client_id=x".to_vec()),
        ("/token", form, b"grant_type=%ff%fe&client_id=x".to_vec()),
        ("/token", form, vec![0xff, 0xfe, 0x00, 0x41]),
        ("/token", form, format!("grant_type=client_credentials&client_id={}", "x".repeat(1_000_000)).into_bytes()),
        ("/token", form, many.clone().into_bytes()),
        ("/token", form, repeated.into_bytes()),
        ("/token", "application/json", b"{\"grant_type\":\"client_credentials\"}".to_vec()),
        ("/token", "text/plain", b"grant_type=client_credentials".to_vec()),
        ("/introspect", form, b"token=%00".to_vec()),
        ("/revoke", form, b"token=x&client_id=%c0%80".to_vec()),
        ("/register", "application/json", format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes()),
        (
            "/register",
            "application/json",
            b"{\"redirect_uris\":[\"https://a.example/cb\"],\"client_name\":\"a\\u0000b\"}".to_vec(),
        ),
        ("/register", "application/json", vec![0xff; 100]),
        ("/login", form, b"username=%00&password=x&csrf_token=x".to_vec()),
        ("/login", form, many.into_bytes()),
        ("/consent", form, b"decision=%ff".to_vec()),
    ];
    for (path, ct, body) in cases {
        let size = body.len();
        let res = post(path, ct, body).await.unwrap();
        let status = res.status();
        assert!(status.is_client_error(), "{path} ({size} bytes, {ct}) answered {status}");
        let text = res.text().await.unwrap_or_default();
        for leak in ["panicked", "sqlx", "SELECT", "/src/", ".rs:", "backtrace"] {
            assert!(!text.contains(leak), "{path}: {leak} in {text}");
        }
    }
    // Query strings: NUL, invalid UTF-8, a megabyte, thousands of parameters.
    let urls = [
        app.url("/authorize?client_id=%00"),
        app.url(&format!("/authorize?client_id={}&scope=%ff", f.client_id)),
        app.url(&format!("/authorize?{}", "state=1&".repeat(3000))),
        app.url("/login?request=%00"),
        app.url("/consent?request=%ff"),
    ];
    for url in urls {
        let status = match app.client.get(&url).send().await {
            Ok(res) => res.status(),
            Err(_) => panic!("{} could not be sent", &url[..80.min(url.len())]),
        };
        assert!(status.is_client_error(), "{} answered {status}", &url[..80.min(url.len())]);
    }
    // A megabyte query string (too long for an HTTP client library: sent by hand).
    let status_line = raw_get(&app, &format!("/authorize?client_id={}", "x".repeat(1_000_000))).await;
    assert!(status_line.starts_with("HTTP/1.1 4"), "{}", &status_line[..status_line.len().min(80)]);

    // Garbage credentials.
    for auth in ["Basic", "Basic %%%", "Basic AAAA", "Bearer x", "Basic Og=="] {
        let res = app
            .client
            .post(app.url("/token"))
            .header("authorization", auth)
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{auth}");
    }
    assert_eq!(app.get("/token").await.status(), 405);
}

/// Send a GET by hand and return the status line (or what came back).
async fn raw_get(app: &TestApp, path: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", app.addr);
    // The server may answer and close before reading everything.
    let _ = stream.write_all(request.as_bytes()).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response).lines().next().unwrap_or("(no answer)").to_owned()
}

/// Send raw bytes and read the whole answer (the server closes after these errors): the head in
/// lower case and the JSON body.
async fn raw_exchange(app: &TestApp, request: Vec<u8>) -> (String, Value) {
    let addr = app.addr;
    tokio::task::spawn_blocking(move || {
        let mut socket = std::net::TcpStream::connect(addr).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // The server may answer and close before reading everything: a failed write is fine.
        let _ = socket.write_all(&request);
        let mut answer = Vec::new();
        let _ = socket.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        (head.to_ascii_lowercase(), serde_json::from_str(body).unwrap_or(Value::Null))
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn over_long_urls_and_headers_get_the_usual_shape() {
    let app = TestApp::spawn().await;
    let long_query = format!("GET /authorize?{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(1_000_000));
    let long_target = format!("GET /?{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000));
    let many_headers: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many_headers = format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many_headers}\r\n");
    let big_header = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "b".repeat(500_000));
    let garbage = "NOT HTTP AT ALL\r\n\r\n".to_owned();
    // A request line longer than hyper's read buffer is answered 431 rather than 414
    // (hyperium/hyper#3874); the shape is what matters here.
    for (request, statuses) in [
        (long_query, &["414", "431"][..]),
        (long_target, &["414"][..]),
        (many_headers, &["431"][..]),
        (big_header, &["431"][..]),
        (garbage, &["400"][..]),
    ] {
        let (head, body) = raw_exchange(&app, request.into_bytes()).await;
        let status = &head[9..12];
        assert!(head.starts_with("http/1.1 ") && statuses.contains(&status), "{statuses:?}: {head}");
        for header in [
            "x-request-id: ",
            "content-type: application/json",
            "cache-control: no-store",
            "x-content-type-options: nosniff",
            "x-frame-options: deny",
            "content-security-policy: ",
            "referrer-policy: no-referrer",
        ] {
            assert!(head.contains(header), "{status}: no {header} in\n{head}");
        }
        assert_eq!(body["error"], json!("invalid_request"), "{status}: {body}");
        assert!(body["error_description"].as_str().is_some_and(|d| !d.is_empty()));
    }
    // Our own answers on a keep-alive connection are untouched, errors included.
    let two = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let (head, _) = raw_exchange(&app, two.to_vec()).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let (head, body) =
        raw_exchange(&app, b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec()).await;
    assert!(head.starts_with("http/1.1 404") && head.contains("x-request-id"), "{head}");
    assert_eq!(body["error"], "not_found");
}

fn assert_page_headers(res: &reqwest::Response, what: &str) {
    let h = res.headers();
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe-inline"), "{what}: {csp}");
    assert_eq!(h["x-frame-options"], "DENY", "{what}");
    assert_eq!(h["x-content-type-options"], "nosniff", "{what}");
    assert_eq!(h["referrer-policy"], "no-referrer", "{what}");
}

#[tokio::test]
async fn security_headers_on_every_page_type_and_hsts_for_https_issuers() {
    let app = TestApp::spawn().await;
    let f = app.fixture().await;
    let browser = Browser::new(&app);
    let res = browser.get(&authorize_url(&app, &f.client_id, REDIRECT, &pkce(), &[])).await;
    assert_page_headers(&res, "authorize redirect");
    let login_url = location(&res);
    let res = browser.get(&login_url).await;
    assert_page_headers(&res, "login page");
    assert_eq!(res.headers()["cache-control"], "no-store");
    let res = browser.login(&login_url, "alice", PASSWORD).await;
    assert_page_headers(&res, "login POST");
    let consent = browser.get(&location(&res)).await;
    assert_page_headers(&consent, "consent page");
    let error = browser.get(&authorize_url(&app, "nope", REDIRECT, &pkce(), &[])).await;
    assert_page_headers(&error, "error page");
    for path in ["/jwks.json", "/.well-known/oauth-authorization-server", "/nope", "/static/tessera.css"] {
        assert_page_headers(&app.get(path).await, path);
    }
    assert!(!app.get("/jwks.json").await.headers().contains_key("strict-transport-security"));

    let https =
        TestApp::spawn_with(Options { issuer: Some("https://auth.example.com".into()), ..Default::default() }).await;
    let res = https.get("/jwks.json").await;
    assert!(res.headers()["strict-transport-security"].to_str().unwrap().contains("max-age="));
}

#[tokio::test]
async fn cors_where_stated_and_nowhere_else() {
    let app = TestApp::spawn().await;
    let preflight = |path: &str, method: &str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url(path))
            .header("origin", "https://inspector.example")
            .header("access-control-request-method", method.to_owned())
            .header("access-control-request-headers", "content-type, authorization, mcp-protocol-version")
            .send()
    };
    for (path, method) in [
        ("/.well-known/oauth-authorization-server", "GET"),
        ("/jwks.json", "GET"),
        ("/register", "POST"),
        ("/token", "POST"),
        ("/revoke", "POST"),
    ] {
        let res = preflight(path, method).await.unwrap();
        assert!(res.status().is_success(), "{path}: {}", res.status());
        assert_eq!(res.headers()["access-control-allow-origin"], "*", "{path}");
        let allowed = res.headers()["access-control-allow-headers"].to_str().unwrap().to_ascii_lowercase();
        assert!(allowed.contains("mcp-protocol-version"), "{path}: {allowed}");
    }
    for (path, method) in [("/authorize", "GET"), ("/login", "POST"), ("/consent", "POST"), ("/introspect", "POST")] {
        let res = preflight(path, method).await.unwrap();
        assert!(!res.headers().contains_key("access-control-allow-origin"), "{path} must not allow cross-origin use");
        let res = app.client.get(app.url(path)).header("origin", "https://inspector.example").send().await.unwrap();
        assert!(!res.headers().contains_key("access-control-allow-origin"), "{path}");
    }
}

/// Wait until the audit table has at least one row of each event.
async fn audit_rows(app: &TestApp, events: &[&str]) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let rows: Vec<Value> = sqlx::query_scalar("SELECT to_jsonb(a) FROM audit_events a ORDER BY id")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
        let missing: Vec<&&str> = events.iter().filter(|e| !rows.iter().any(|r| r["event"] == **e)).collect();
        if missing.is_empty() {
            return rows;
        }
        assert!(tokio::time::Instant::now() < deadline, "audit events missing: {missing:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn audit_records_every_event_and_no_secret_is_stored_or_logged() {
    let app = TestApp::spawn_with(settings(&[("TESSERA_RATE_LIMIT_REVOKE", "1000/1m,3/1m")])).await;
    let f = app.fixture().await;
    let rs_secret = tessera::oauth::secret::Secret::generate();
    tessera::store::resources::set_credentials(&app.db.pool, RESOURCE, "rs_test", &rs_secret.digest()).await.unwrap();
    app.state.reload_resources().await;
    let mut secrets: Vec<String> = vec![PASSWORD.to_owned(), rs_secret.expose().to_owned()];

    // A failed login, then the whole flow with a code we keep.
    let browser = Browser::new(&app);
    let p = pkce();
    let res = browser.get(&authorize_url(&app, &f.client_id, REDIRECT, &p, &[])).await;
    let login_url = location(&res);
    browser.login(&login_url, "alice", "not the password at all").await;
    let res = browser.login(&login_url, "alice", PASSWORD).await;
    let res = browser.consent(&location(&res), "allow").await;
    let callback = location(&res);
    let code = crate::common::flow::query(&callback)["code"].clone();
    secrets.push(code.clone());
    let (_, _, tokens) = app.exchange(&code, Some(&p.verifier), REDIRECT, &f.client_id).await;
    secrets.push(p.verifier.clone());
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    secrets.extend([access.clone(), refresh.clone()]);
    // Code replay, refresh rotation and reuse, introspection, revocation, a rate limit.
    app.exchange(&code, Some(&p.verifier), REDIRECT, &f.client_id).await;
    let tokens = code_and_tokens(&app, &f, &[]).await;
    let r1 = tokens["refresh_token"].as_str().unwrap().to_owned();
    let (_, _, rotated) =
        app.token(&[("grant_type", "refresh_token"), ("refresh_token", &r1), ("client_id", &f.client_id)], None).await;
    let r2 = rotated["refresh_token"].as_str().unwrap().to_owned();
    // Using r2 ends r1's reuse grace, so presenting r1 again is reuse.
    let (_, _, again) =
        app.token(&[("grant_type", "refresh_token"), ("refresh_token", &r2), ("client_id", &f.client_id)], None).await;
    secrets.extend([
        r1.clone(),
        r2,
        again["refresh_token"].as_str().unwrap().to_owned(),
        tokens["access_token"].as_str().unwrap().to_owned(),
    ]);
    app.token(&[("grant_type", "refresh_token"), ("refresh_token", &r1), ("client_id", &f.client_id)], None).await;
    let introspected = app
        .client
        .post(app.url("/introspect"))
        .basic_auth("rs_test", Some(rs_secret.expose()))
        .form(&[("token", access.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(introspected.status(), 200);
    for _ in 0..4 {
        app.client
            .post(app.url("/revoke"))
            .form(&[("token", access.as_str()), ("client_id", f.client_id.as_str())])
            .send()
            .await
            .unwrap();
    }
    // Registration.
    let reg: Value = app
        .client
        .post(app.url("/register"))
        .json(&json!({"redirect_uris": ["http://127.0.0.1/cb"], "token_endpoint_auth_method": "client_secret_basic"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    secrets.extend([
        reg["client_secret"].as_str().unwrap().to_owned(),
        reg["registration_access_token"].as_str().unwrap().to_owned(),
    ]);

    let rows = audit_rows(
        &app,
        &[
            "login.failure",
            "login.success",
            "consent.granted",
            "authorization.approved",
            "token.issued",
            "token.denied",
            "code.replay_detected",
            "refresh.rotated",
            "refresh.reuse_detected",
            "introspection",
            "token.revoked",
            "rate_limit.hit",
            "client.registered",
        ],
    )
    .await;
    let issued = rows.iter().find(|r| r["event"] == "token.issued").unwrap();
    assert_eq!(issued["outcome"], "success");
    assert_eq!(issued["client_id"], f.client_id);
    assert_eq!(issued["subject"], f.user_id.to_string());
    assert_eq!(issued["resource"], RESOURCE);
    assert_eq!(issued["scopes"], "tools:read");
    assert_eq!(issued["detail"], "authorization_code");
    assert_eq!(issued["source"], "127.0.0.1");
    assert!(issued["request_id"].as_str().is_some_and(|r| r.len() == 32));
    let failure = rows.iter().find(|r| r["event"] == "login.failure").unwrap();
    assert_eq!(failure["outcome"], "denied");
    assert_eq!(failure["digest"], tessera::oauth::secret::digest_hex("alice"));
    let reuse = rows.iter().find(|r| r["event"] == "refresh.reuse_detected").unwrap();
    assert_eq!(reuse["digest"], hex::encode(tessera::oauth::secret::digest(&r1)));
    assert_eq!(rows.iter().find(|r| r["event"] == "rate_limit.hit").unwrap()["outcome"], "rate_limited");

    // Nothing secret in the database...
    let dump: String = sqlx::query_scalar(
        "SELECT string_agg(t, ' ') FROM (
            SELECT row_to_json(x)::text AS t FROM audit_events x
            UNION ALL SELECT row_to_json(x)::text FROM refresh_tokens x
            UNION ALL SELECT row_to_json(x)::text FROM authorization_codes x
            UNION ALL SELECT row_to_json(x)::text FROM clients x
            UNION ALL SELECT row_to_json(x)::text FROM sessions x
            UNION ALL SELECT row_to_json(x)::text FROM users x
            UNION ALL SELECT row_to_json(x)::text FROM resources x
            UNION ALL SELECT row_to_json(x)::text FROM revoked_tokens x
            UNION ALL SELECT row_to_json(x)::text FROM authorization_requests x) all_rows",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    // ...nor in any log line of the whole flow.
    let log = crate::common::captured_logs().text();
    assert!(log.contains(&f.client_id), "the capture holds this test's log lines");
    for secret in &secrets {
        assert!(!dump.contains(secret.as_str()), "a secret is stored in plain text");
        assert!(!log.contains(secret.as_str()), "a secret is in the logs");
    }
}

#[tokio::test]
async fn audit_records_are_flushed_on_shutdown() {
    let app = TestApp::spawn().await;
    for i in 0..3000 {
        app.state
            .audit
            .record(
                tessera::platform::audit::Event::new("test.event", tessera::platform::audit::Outcome::Success)
                    .detail(format!("{i}")),
            )
            .await;
    }
    app.state.audit.shutdown().await;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE event = 'test.event'")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(count, 3000);
    // Append-only.
    let err = sqlx::query("UPDATE audit_events SET outcome = 'denied'").execute(&app.db.pool).await.unwrap_err();
    assert!(err.to_string().contains("append-only"));
}

#[tokio::test]
async fn audit_tail_reads_the_log() {
    let app = TestApp::spawn().await;
    let f = app.fixture().await;
    code_and_tokens(&app, &f, &[]).await;
    audit_rows(&app, &["token.issued", "login.success"]).await;
    let out = crate::common::tessera_bin()
        .args(["audit", "tail", "--json", "--event", "login", "--since", "1h"])
        .env("DATABASE_URL", app.db.url())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(!lines.is_empty());
    assert!(lines.iter().all(|l| l["event"].as_str().unwrap().starts_with("login.")));
    let out = crate::common::tessera_bin()
        .args(["audit", "tail", "--client", &f.client_id])
        .env("DATABASE_URL", app.db.url())
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("token.issued") && text.contains(&f.client_id), "{text}");
    // consent revocation from the CLI is audited too.
    let out = crate::common::tessera_bin()
        .args(["user", "revoke", "alice", "--client", &f.client_id])
        .env("DATABASE_URL", app.db.url())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    audit_rows(&app, &["consent.revoked"]).await;
}

#[tokio::test]
async fn metrics_are_served_on_their_own_listener() {
    let app = TestApp::spawn().await;
    let f = app.fixture().await;
    let port = crate::common::free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    tessera::server::start_metrics(&app.state, addr, stop.clone()).await.unwrap();
    code_and_tokens(&app, &f, &[]).await;
    let text = reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap();
    for name in [
        "tessera_http_requests_total",
        "tessera_http_request_duration_seconds",
        "tessera_tokens_issued_total",
        "tessera_db_pool_connections",
        "tessera_audit_queue_depth",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    assert!(text.contains("route=\"/token\""));
    // Not on the public listener.
    assert_eq!(app.client.get(format!("{}/metrics", app.origin)).send().await.unwrap().status(), 404);
    stop.cancel();
}

/// The log lines (JSON) of one request, by its request id.
fn lines_of(request_id: &str) -> Vec<Value> {
    crate::common::captured_logs()
        .text()
        .lines()
        .filter(|l| l.contains(request_id))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn access_level(request_id: &str) -> Option<String> {
    lines_of(request_id)
        .iter()
        .find(|l| l["fields"]["message"] == "request" || l["fields"]["message"] == "request failed")
        .map(|l| l["level"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn token_successes_are_logged_at_debug_errors_at_info_and_a_sample_at_info() {
    let app = TestApp::spawn().await;
    app.add_resource(RESOURCE, true).await;
    let (id, secret) = app.add_client(ClientSpec::service()).await;
    let secret = secret.unwrap();
    let (status, headers, _) = app.token(&[("grant_type", "client_credentials")], Some((&id, &secret))).await;
    assert_eq!(status, 200);
    let ok = headers["x-request-id"].to_str().unwrap().to_owned();
    let (status, headers, _) = app.token(&[("grant_type", "client_credentials")], Some((&id, "wrong"))).await;
    assert_eq!(status, 401);
    let refused = headers["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(access_level(&ok).as_deref(), Some("DEBUG"), "a routine success: debug only");
    assert_eq!(access_level(&refused).as_deref(), Some("INFO"), "a refusal is always logged");
    // The audit record of the issued token is in the database; its copy in the log is debug too,
    // while the denial's copy stays at info.
    let audit_level = |id: &str| {
        lines_of(id)
            .iter()
            .find(|l| l["fields"]["message"] == "audit")
            .map(|l| l["level"].as_str().unwrap_or_default().to_owned())
    };
    assert_eq!(audit_level(&ok).as_deref(), Some("DEBUG"));
    assert_eq!(audit_level(&refused).as_deref(), Some("INFO"));

    let sampled = TestApp::spawn_with(settings(&[("TESSERA_ACCESS_LOG_SAMPLE", "1")])).await;
    sampled.add_resource(RESOURCE, true).await;
    let (id, secret) = sampled.add_client(ClientSpec::service()).await;
    let (_, headers, _) = sampled.token(&[("grant_type", "client_credentials")], Some((&id, &secret.unwrap()))).await;
    let logged = headers["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(access_level(&logged).as_deref(), Some("INFO"), "TESSERA_ACCESS_LOG_SAMPLE=1 logs every one");
}
