//! Typed configuration: read from the environment, overlaid by an optional TOML file, validated once at start.
//!
//! Every setting has one environment variable (`TESSERA_*`, or `DATABASE_URL`) and one key in the
//! TOML file (the variable's name in lower case without the `TESSERA_` prefix). A value from the file
//! wins over the environment. A bad value is a [`ConfigError`] that names the variable. Each setting
//! is declared once, in the `settings!` table: variable, default, parser and bounds, meaning.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;

/// A configuration value that is wrong or missing, named by its environment variable.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: &str, message: impl Into<String>) -> Self {
        Self { key: key.to_owned(), message: message.into() }
    }
}

/// The 32-byte key that encrypts signing keys at rest. Never printed.
#[derive(Clone)]
pub struct MasterKey(pub(crate) [u8; 32]);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

impl MasterKey {
    /// Decode a base64 (standard or URL-safe, padded or not) string into exactly 32 bytes.
    pub fn from_base64(value: &str) -> Result<Self, String> {
        let value = value.trim();
        let engines = [
            &base64::engine::general_purpose::STANDARD,
            &base64::engine::general_purpose::STANDARD_NO_PAD,
            &base64::engine::general_purpose::URL_SAFE,
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ];
        let bytes = engines
            .iter()
            .find_map(|engine| engine.decode(value).ok())
            .ok_or_else(|| "is not valid base64; generate one with `openssl rand -base64 32`".to_owned())?;
        let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            format!(
                "must decode to exactly 32 bytes (got {}); generate one with `openssl rand -base64 32`",
                bytes.len()
            )
        })?;
        Ok(Self(key))
    }

    /// A fresh random key (used by `tessera dev` for its data dir, and by tests).
    pub fn generate() -> Self {
        Self(rand::random())
    }

    /// The key's bytes, for deriving other keys from it.
    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }
}

/// A database URL, which may carry a password: never printed.
#[derive(Clone)]
pub struct DatabaseUrl(pub String);

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DatabaseUrl([redacted])")
    }
}

/// The issuer identifier (RFC 8414 §2): `https` (or `http` on a loopback host), no query, no
/// fragment, no trailing slash. This exact string is what metadata, tokens and `iss` carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issuer(String);

impl Issuer {
    pub fn parse(value: &str) -> Result<Self, String> {
        let url = url::Url::parse(value.trim()).map_err(|e| format!("is not an absolute URL ({e})"))?;
        let host = match url.host() {
            Some(host) => host,
            None => return Err("has no host".into()),
        };
        match url.scheme() {
            "https" => {}
            "http" if is_loopback_host(&host) => {}
            "http" => {
                return Err("must use https (http is allowed only for localhost, 127.0.0.1 or [::1])".into());
            }
            other => return Err(format!("must be an https URL, not {other}:")),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not contain user information".into());
        }
        if url.query().is_some() {
            return Err("must not have a query component (RFC 8414 §2)".into());
        }
        if url.fragment().is_some() {
            return Err("must not have a fragment component (RFC 8414 §2)".into());
        }
        let mut text = url.as_str().to_owned();
        while text.ends_with('/') {
            text.pop();
        }
        Ok(Self(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path part of the issuer without a trailing slash: `""` for `https://h`, `"/tenant"` for `https://h/tenant`.
    pub fn path(&self) -> &str {
        let after_scheme = self.0.split_once("://").map_or("", |(_, rest)| rest);
        after_scheme.find('/').map_or("", |i| &after_scheme[i..])
    }

    /// `issuer + suffix`, for endpoint URLs.
    pub fn join(&self, suffix: &str) -> String {
        format!("{}{}", self.0, suffix)
    }

    pub fn is_https(&self) -> bool {
        self.0.starts_with("https://")
    }
}

impl fmt::Display for Issuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub use crate::oauth::redirect_uri::is_loopback_host;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// Everything Tessera reads from its environment. Fields that only some commands need are
/// `Option`s; each command asks for what it needs with the `require_*` methods.
#[derive(Clone, Debug)]
pub struct Config {
    pub database_url: Option<DatabaseUrl>,
    pub issuer: Option<Issuer>,
    pub listen: SocketAddr,
    pub master_key: Option<MasterKey>,
    pub log: String,
    pub log_format: Option<LogFormat>,
    /// Default lifetime of access tokens, used where a resource sets none, and the floor for how
    /// long a retired signing key stays published.
    pub access_token_ttl: Duration,
    /// How long a freshly rotated signing key is published before it signs (default: the longest access-token lifetime).
    pub key_rotation_delay: Option<Duration>,
    /// Database connection pool size per instance.
    pub db_max_connections: u32,
    /// A refresh token unused this long expires.
    pub refresh_idle_ttl: Duration,
    /// No refresh token of a grant outlives this, however often it is rotated.
    pub refresh_max_ttl: Duration,
    /// Within this long of a rotation, the rotated refresh token presented again gets the same
    /// successor instead of revoking the grant (zero: never).
    pub refresh_reuse_grace: Duration,
    /// A browser session unused this long ends.
    pub session_ttl: Duration,
    /// Who may use dynamic client registration.
    pub registration: RegistrationPolicy,
    /// Registrations allowed per source address: (count, period).
    pub registration_rate: (u32, Duration),
    /// Self-registered clients that never complete an authorization are deleted after this.
    pub registration_unauthorized_ttl: Duration,
    /// Self-registered and metadata-document clients unused this long are deleted.
    pub registration_idle_ttl: Duration,
    /// Test-only: fetch client metadata documents from loopback addresses over http.
    /// `None` when not set (dev turns it on, serve keeps it off).
    pub cimd_allow_loopback: Option<bool>,
    /// Non-default ports allowed in metadata document URLs.
    pub cimd_allowed_ports: Vec<u16>,
    /// Metadata document fetches per host per minute.
    pub cimd_fetches_per_minute: u32,
    /// Proxies whose `Forwarded`/`X-Forwarded-For` headers are believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Where `/metrics` is served; off when `None`.
    pub metrics_listen: Option<SocketAddr>,
    /// Audit records older than this are deleted.
    pub audit_retention: Duration,
    /// Per-instance rate limits.
    pub rate_limits: RateLimitSettings,
    /// Whether the login page offers the password form (`false`: only upstream identity providers).
    pub password_login: bool,
    /// Whether a password sign-in asks for a second factor.
    pub mfa: MfaPolicy,
    /// One in this many successful token, introspection, revocation and userinfo requests is
    /// logged at info (0: none; they are logged at debug).
    pub access_log_sample: u32,
    /// How long one request to an upstream identity provider may take.
    pub upstream_timeout: Duration,
    /// Failed logins for one account from one source before attempts are refused for a while.
    pub login_max_failures: u32,
    /// Failed logins from one source (any accounts) within 15 minutes before the source is refused.
    pub login_source_max_failures: u32,
    /// `tessera gateway`.
    pub gateway: GatewayConfig,
}

/// What `tessera gateway` reads (its flags override these).
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// The MCP server behind the gateway (`http://127.0.0.1:3001/mcp`).
    pub upstream: Option<url::Url>,
    /// The resource the gateway protects: its canonical URI, the tokens' audience.
    pub resource: Option<String>,
    /// The authorization server whose tokens are accepted.
    pub issuer: Option<Issuer>,
    pub listen: SocketAddr,
    /// The policy file.
    pub policy: Option<std::path::PathBuf>,
    pub verify: VerifyMode,
    /// The resource's introspection credentials (`--verify introspect`).
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    /// Origins allowed besides the resource's own.
    pub allowed_origins: Vec<String>,
    /// Headers that carry the verified identity upstream: (what, header name).
    pub identity_headers: Vec<(IdentityField, String)>,
}

/// How the gateway checks tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyMode {
    /// The issuer's JWKS (no call per request; revocation seen at `exp`).
    Jwks,
    /// Introspection per token (revocation seen at once), with a short cache.
    Introspect,
}

/// What an identity header carries upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdentityField {
    Subject,
    Client,
    Scopes,
}

/// A secret setting, never printed.
#[derive(Clone)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// A rate: `count` per `period`.
pub type Rate = (u32, Duration);

/// Rate limits per instance: per source address, and per client where a client is known.
#[derive(Clone, Debug)]
pub struct RateLimitSettings {
    pub token: (Rate, Rate),
    pub introspect: (Rate, Rate),
    pub revoke: (Rate, Rate),
    /// `/authorize`, `/login`, `/consent`: per source address.
    pub browser: Rate,
}

/// `TESSERA_REGISTRATION`: who may register clients at `/register`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegistrationPolicy {
    /// Anyone (MCP clients need it), within the rate limit.
    Open,
    /// Only with an initial access token from `tessera client registration-token`.
    Token,
    /// Nobody: `/register` answers 403 and is not advertised.
    Closed,
}

/// `TESSERA_MFA`: whether a password sign-in asks for a second factor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MfaPolicy {
    /// Never (second factors set up before are ignored, and none can be set up).
    Off,
    /// From those who set one up on their account page.
    Optional,
    /// From everyone: a person without one can only reach their account page to set one up.
    Required,
}

/// One setting, declared once in `settings!`: its environment variable, the text it takes when no
/// source sets it, how that text is parsed and checked, and what it means.
pub struct Setting<T, D = &'static str> {
    pub env: &'static str,
    /// The text parsed when neither the environment nor the file sets the variable, or [`Unset`].
    pub default: D,
    pub doc: &'static str,
    parse: fn(&str) -> Result<T, String>,
}

/// The default of a setting that has none: when no source sets it, its value is `None`.
pub struct Unset;

impl<T, D> Setting<T, D> {
    fn parse_text(&self, text: &str) -> Result<T, ConfigError> {
        (self.parse)(text).map_err(|m| ConfigError::new(self.env, m))
    }
}

impl<T> Setting<T> {
    /// The value from the file or the environment, else the default.
    pub fn read(&self, src: &Sources) -> Result<T, ConfigError> {
        self.parse_text(src.get(self.env).unwrap_or(self.default))
    }
}

impl<T> Setting<T, Unset> {
    /// The value from the file or the environment; `None` when neither sets it.
    pub fn read(&self, src: &Sources) -> Result<Option<T>, ConfigError> {
        src.get(self.env).map(|text| self.parse_text(text)).transpose()
    }
}

/// What every setting has, whatever the type of its value.
#[derive(Clone, Copy, Debug)]
pub struct SettingInfo {
    pub env: &'static str,
    pub default: Option<&'static str>,
    pub doc: &'static str,
}

impl SettingInfo {
    /// The key in the TOML file: the variable's name in lower case without `TESSERA_`.
    pub fn file_key(&self) -> String {
        self.env.strip_prefix("TESSERA_").unwrap_or(self.env).to_ascii_lowercase()
    }
}

/// Declares each setting as a [`Setting`] constant named after its environment variable
/// (`NAME: TYPE = DEFAULT, PARSER;` under a one-line doc comment), and [`SETTINGS`], all of them.
macro_rules! settings {
    (@default_type Unset) => { Unset };
    (@default_type $default:literal) => { &'static str };
    (@default_text Unset) => { None };
    (@default_text $default:literal) => { Some($default) };
    ($( #[doc = $doc:literal] $env:ident: $ty:ty = $default:tt, $parse:expr; )*) => {
        $(
            #[doc = $doc]
            pub const $env: Setting<$ty, settings!(@default_type $default)> =
                Setting { env: stringify!($env), default: $default, doc: $doc.trim_ascii_start(), parse: $parse };
        )*

        /// Every setting, in the order of [`Config`]'s fields (the README's table lists them too).
        pub const SETTINGS: &[SettingInfo] = &[$(
            SettingInfo {
                env: stringify!($env),
                default: settings!(@default_text $default),
                doc: $doc.trim_ascii_start(),
            },
        )*];
    };
}

const MINUTE: u64 = 60;
const HOUR: u64 = 3600;
const DAY: u64 = 86400;
const YEAR: u64 = 365 * DAY;

settings! {
    /// PostgreSQL URL (required by `serve`; `dev` and the admin commands fall back to the `./data` cluster).
    DATABASE_URL: DatabaseUrl = Unset, parse_database_url;
    /// The public URL of this server: `https`, or `http` only on a loopback host (required by `serve`).
    TESSERA_ISSUER: Issuer = Unset, Issuer::parse;
    /// Address and port `serve` listens on.
    TESSERA_LISTEN: SocketAddr = "127.0.0.1:8080", |v| socket_addr(v, "127.0.0.1:8080 or [::]:8080");
    /// 32 random bytes in base64 that encrypt the signing keys at rest (required by `serve`).
    TESSERA_MASTER_KEY: MasterKey = Unset, MasterKey::from_base64;
    /// Log filter in `tracing` syntax (`info`, `tessera=debug,info`).
    TESSERA_LOG: String = "info", log_filter;
    /// `json` or `pretty` (when unset: `json` for `serve`, `pretty` for the other commands).
    TESSERA_LOG_FORMAT: LogFormat = Unset, log_format;
    /// Access-token lifetime where a resource sets none.
    TESSERA_ACCESS_TOKEN_TTL: Duration = "10m", |v| duration_in(v, MINUTE, DAY);
    /// Delay of `keys rotate` before a new key signs (when unset: the longer of the token lifetime and the JWKS cache time).
    TESSERA_KEY_ROTATION_DELAY: Duration = Unset, |v| duration_in(v, 0, 30 * DAY);
    /// Database connections per instance.
    TESSERA_DB_MAX_CONNECTIONS: u32 = "16", |v| number_in(v, 1, 1000);
    /// A refresh token unused this long expires.
    TESSERA_REFRESH_TOKEN_IDLE_TTL: Duration = "30d", |v| duration_in(v, MINUTE, YEAR);
    /// No refresh token of a grant outlives this, however often it is rotated.
    TESSERA_REFRESH_TOKEN_MAX_TTL: Duration = "90d", |v| duration_in(v, MINUTE, 3 * YEAR);
    /// A rotated refresh token presented again this soon gets the same successor (`0s`: reuse always revokes).
    TESSERA_REFRESH_TOKEN_REUSE_GRACE: Duration = "30s", |v| duration_in(v, 0, 10 * MINUTE);
    /// A browser session unused this long ends.
    TESSERA_SESSION_TTL: Duration = "12h", |v| duration_in(v, MINUTE, 30 * DAY);
    /// Who may use dynamic client registration: `open`, `token` or `closed`.
    TESSERA_REGISTRATION: RegistrationPolicy = "open", registration_policy;
    /// Registrations per source address (`N/DURATION`), per instance.
    TESSERA_REGISTRATION_RATE_LIMIT: Rate = "30/1h", rate;
    /// A self-registered client that never completes an authorization is deleted after this.
    TESSERA_REGISTRATION_UNAUTHORIZED_TTL: Duration = "24h", |v| duration_in(v, MINUTE, YEAR);
    /// Self-registered and metadata-document clients unused this long are deleted.
    TESSERA_REGISTRATION_IDLE_TTL: Duration = "90d", |v| duration_in(v, HOUR, 10 * YEAR);
    /// Tests only: fetch client metadata documents from loopback addresses over http.
    TESSERA_CIMD_ALLOW_LOOPBACK: bool = Unset, boolean;
    /// Ports other than 443 allowed in metadata document URLs (comma-separated).
    TESSERA_CIMD_ALLOWED_PORTS: Vec<u16> = "", |v| list(v, port);
    /// Metadata document fetches per host per minute, per instance.
    TESSERA_CIMD_FETCHES_PER_MINUTE: u32 = "20", |v| number_in(v, 1, 100_000);
    /// Addresses or CIDR ranges of proxies whose `Forwarded`/`X-Forwarded-For` are believed (comma-separated).
    TESSERA_TRUSTED_PROXIES: Vec<ipnet::IpNet> = "", |v| list(v, address_range);
    /// Address where Prometheus metrics are served (off when unset).
    TESSERA_METRICS_LISTEN: SocketAddr = Unset, |v| socket_addr(v, "127.0.0.1:9090");
    /// Audit records older than this are deleted.
    TESSERA_AUDIT_RETENTION: Duration = "180d", |v| duration_in(v, DAY, 10 * YEAR);
    /// `/token` requests per source address, and per client.
    TESSERA_RATE_LIMIT_TOKEN: (Rate, Rate) = "1200/1m,600/1m", rate_pair;
    /// `/introspect` requests per source address, and per calling resource server or client.
    TESSERA_RATE_LIMIT_INTROSPECT: (Rate, Rate) = "6000/1m,6000/1m", rate_pair;
    /// `/revoke` requests per source address, and per client.
    TESSERA_RATE_LIMIT_REVOKE: (Rate, Rate) = "600/1m,300/1m", rate_pair;
    /// `/authorize`, `/login` and `/consent` requests per source address.
    TESSERA_RATE_LIMIT_BROWSER: Rate = "300/1m", rate;
    /// Whether the login page offers the password form (`false`: only upstream identity providers).
    TESSERA_PASSWORD_LOGIN: bool = "true", boolean;
    /// Two-step sign-in after a password: `off`, `optional` (who set it up) or `required` (everyone).
    TESSERA_MFA: MfaPolicy = "optional", mfa_policy;
    /// One in this many successful token, introspection, revocation and userinfo requests is logged at info (0: none).
    TESSERA_ACCESS_LOG_SAMPLE: u32 = "0", |v| number_in(v, 0, 1_000_000);
    /// How long one request to an upstream identity provider may take.
    TESSERA_UPSTREAM_TIMEOUT: Duration = "10s", |v| duration_in(v, 1, MINUTE);
    /// Failed logins for one account from one source before attempts are refused for a while.
    TESSERA_LOGIN_MAX_FAILURES: u32 = "5", |v| number_in(v, 1, 1000);
    /// Failed logins from one source (any accounts) within 15 minutes before the source is refused.
    TESSERA_LOGIN_SOURCE_MAX_FAILURES: u32 = "50", |v| number_in(v, 1, 1_000_000);
    /// Gateway: the MCP server it protects, an `http` URL (`http://127.0.0.1:3001/mcp`).
    TESSERA_GATEWAY_UPSTREAM: url::Url = Unset, upstream_url;
    /// Gateway: the canonical URI of the protected resource (the tokens' audience).
    TESSERA_GATEWAY_RESOURCE: String = Unset, resource_uri;
    /// Gateway: the authorization server (issuer) whose tokens it accepts.
    TESSERA_GATEWAY_ISSUER: Issuer = Unset, Issuer::parse;
    /// Gateway: address and port it listens on.
    TESSERA_GATEWAY_LISTEN: SocketAddr = "127.0.0.1:8443", |v| socket_addr(v, "127.0.0.1:8443");
    /// Gateway: the policy file (per-tool scopes and rates); without one, any valid token may call anything.
    TESSERA_GATEWAY_POLICY: std::path::PathBuf = Unset, |v| Ok(std::path::PathBuf::from(v.trim()));
    /// Gateway: `jwks` (verify tokens locally) or `introspect` (ask the issuer; revocation at once).
    TESSERA_GATEWAY_VERIFY: VerifyMode = "jwks", verify_mode;
    /// Gateway: the resource's introspection client id (`tessera resource add` prints it).
    TESSERA_GATEWAY_CLIENT_ID: String = Unset, |v| Ok(v.trim().to_owned());
    /// Gateway: the resource's introspection client secret.
    TESSERA_GATEWAY_CLIENT_SECRET: Secret = Unset, |v| Ok(Secret(v.trim().to_owned()));
    /// Gateway: origins allowed besides the resource's own (comma-separated, e.g. `https://app.example.com`).
    TESSERA_GATEWAY_ALLOWED_ORIGINS: Vec<String> = "", |v| list(v, origin);
    /// Gateway: headers that carry the verified identity upstream (`subject=X-User,client=X-Client,scopes=X-Scopes`).
    TESSERA_GATEWAY_IDENTITY_HEADERS: Vec<(IdentityField, String)> = "", |v| list(v, identity_header);
}

/// Raw values by environment-variable name, before parsing.
#[derive(Default, Debug)]
pub struct Sources {
    values: BTreeMap<&'static str, (String, &'static str)>,
}

impl Sources {
    /// Read every known variable from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|key| std::env::var_os(key))
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<std::ffi::OsString>) -> Result<Self, ConfigError> {
        let mut values = BTreeMap::new();
        for setting in SETTINGS {
            if let Some(raw) = lookup(setting.env) {
                let value = raw.into_string().map_err(|_| ConfigError::new(setting.env, "is not valid UTF-8"))?;
                if !value.is_empty() {
                    values.insert(setting.env, (value, "environment"));
                }
            }
        }
        Ok(Self { values })
    }

    /// Overlay the values of a TOML file; unknown keys are an error so a typo is not silently ignored.
    pub fn overlay_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("--config", format!("cannot read {}: {e}", path.display())))?;
        self.overlay_toml(&text).map_err(|e| ConfigError::new(&e.key, format!("{} (in {})", e.message, path.display())))
    }

    pub fn overlay_toml(&mut self, text: &str) -> Result<(), ConfigError> {
        let table: toml::Table = toml::from_str(text)
            .map_err(|e| ConfigError::new("--config", format!("is not valid TOML: {}", e.message())))?;
        for (key, value) in table {
            let Some(setting) = SETTINGS.iter().find(|s| s.file_key() == key) else {
                return Err(ConfigError::new(&key, "is not a known setting"));
            };
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                _ => {
                    return Err(ConfigError::new(&key, "must be a string, an integer or a boolean"));
                }
            };
            self.values.insert(setting.env, (text, "file"));
        }
        Ok(())
    }

    pub fn set(&mut self, env: &'static str, value: impl Into<String>) {
        self.values.insert(env, (value.into(), "default"));
    }

    pub fn get(&self, env: &str) -> Option<&str> {
        self.values.get(env).map(|(v, _)| v.as_str())
    }
}

impl Config {
    /// Parse every setting, in the order of the fields: the first bad one is the one reported.
    pub fn from_sources(src: &Sources) -> Result<Self, ConfigError> {
        Ok(Self {
            database_url: DATABASE_URL.read(src)?,
            issuer: TESSERA_ISSUER.read(src)?,
            listen: TESSERA_LISTEN.read(src)?,
            master_key: TESSERA_MASTER_KEY.read(src)?,
            log: TESSERA_LOG.read(src)?,
            log_format: TESSERA_LOG_FORMAT.read(src)?,
            access_token_ttl: TESSERA_ACCESS_TOKEN_TTL.read(src)?,
            key_rotation_delay: TESSERA_KEY_ROTATION_DELAY.read(src)?,
            db_max_connections: TESSERA_DB_MAX_CONNECTIONS.read(src)?,
            refresh_idle_ttl: TESSERA_REFRESH_TOKEN_IDLE_TTL.read(src)?,
            refresh_max_ttl: refresh_max_ttl(src)?,
            refresh_reuse_grace: TESSERA_REFRESH_TOKEN_REUSE_GRACE.read(src)?,
            session_ttl: TESSERA_SESSION_TTL.read(src)?,
            registration: TESSERA_REGISTRATION.read(src)?,
            registration_rate: TESSERA_REGISTRATION_RATE_LIMIT.read(src)?,
            registration_unauthorized_ttl: TESSERA_REGISTRATION_UNAUTHORIZED_TTL.read(src)?,
            registration_idle_ttl: TESSERA_REGISTRATION_IDLE_TTL.read(src)?,
            cimd_allow_loopback: TESSERA_CIMD_ALLOW_LOOPBACK.read(src)?,
            cimd_allowed_ports: TESSERA_CIMD_ALLOWED_PORTS.read(src)?,
            cimd_fetches_per_minute: TESSERA_CIMD_FETCHES_PER_MINUTE.read(src)?,
            trusted_proxies: TESSERA_TRUSTED_PROXIES.read(src)?,
            metrics_listen: TESSERA_METRICS_LISTEN.read(src)?,
            audit_retention: TESSERA_AUDIT_RETENTION.read(src)?,
            rate_limits: RateLimitSettings {
                token: TESSERA_RATE_LIMIT_TOKEN.read(src)?,
                introspect: TESSERA_RATE_LIMIT_INTROSPECT.read(src)?,
                revoke: TESSERA_RATE_LIMIT_REVOKE.read(src)?,
                browser: TESSERA_RATE_LIMIT_BROWSER.read(src)?,
            },
            password_login: TESSERA_PASSWORD_LOGIN.read(src)?,
            mfa: TESSERA_MFA.read(src)?,
            access_log_sample: TESSERA_ACCESS_LOG_SAMPLE.read(src)?,
            upstream_timeout: TESSERA_UPSTREAM_TIMEOUT.read(src)?,
            login_max_failures: TESSERA_LOGIN_MAX_FAILURES.read(src)?,
            login_source_max_failures: TESSERA_LOGIN_SOURCE_MAX_FAILURES.read(src)?,
            gateway: GatewayConfig {
                upstream: TESSERA_GATEWAY_UPSTREAM.read(src)?,
                resource: TESSERA_GATEWAY_RESOURCE.read(src)?,
                issuer: TESSERA_GATEWAY_ISSUER.read(src)?,
                listen: TESSERA_GATEWAY_LISTEN.read(src)?,
                policy: TESSERA_GATEWAY_POLICY.read(src)?,
                verify: TESSERA_GATEWAY_VERIFY.read(src)?,
                client_id: TESSERA_GATEWAY_CLIENT_ID.read(src)?,
                client_secret: TESSERA_GATEWAY_CLIENT_SECRET.read(src)?,
                allowed_origins: TESSERA_GATEWAY_ALLOWED_ORIGINS.read(src)?,
                identity_headers: TESSERA_GATEWAY_IDENTITY_HEADERS.read(src)?,
            },
        })
    }

    pub fn require_database_url(&self) -> Result<&DatabaseUrl, ConfigError> {
        self.database_url.as_ref().ok_or_else(|| {
            ConfigError::new(
                "DATABASE_URL",
                "is required (e.g. postgres://tessera@db.example.com/tessera); `tessera dev` needs none",
            )
        })
    }

    pub fn require_master_key(&self) -> Result<&MasterKey, ConfigError> {
        self.master_key.as_ref().ok_or_else(|| {
            ConfigError::new(
                "TESSERA_MASTER_KEY",
                "is required: 32 random bytes in base64, e.g. from `openssl rand -base64 32`",
            )
        })
    }

    pub fn require_issuer(&self) -> Result<&Issuer, ConfigError> {
        self.issuer.as_ref().ok_or_else(|| {
            ConfigError::new(
                "TESSERA_ISSUER",
                "is required: the public https URL of this server, e.g. https://auth.example.com",
            )
        })
    }
}

/// The one rule across settings: a grant's refresh tokens cannot expire by idleness later than
/// they expire for good.
fn refresh_max_ttl(src: &Sources) -> Result<Duration, ConfigError> {
    let idle = TESSERA_REFRESH_TOKEN_IDLE_TTL.read(src)?;
    let max = TESSERA_REFRESH_TOKEN_MAX_TTL.read(src)?;
    if max < idle {
        let message = format!("must not be shorter than {}", TESSERA_REFRESH_TOKEN_IDLE_TTL.env);
        return Err(ConfigError::new(TESSERA_REFRESH_TOKEN_MAX_TTL.env, message));
    }
    Ok(max)
}

// The parsers of the settings' text: each returns the message that follows the variable's name.

fn parse_database_url(value: &str) -> Result<DatabaseUrl, String> {
    let value = value.trim();
    if !(value.starts_with("postgres://") || value.starts_with("postgresql://")) {
        return Err("must be a postgres:// URL".into());
    }
    value
        .parse::<sqlx::postgres::PgConnectOptions>()
        .map_err(|_| "is not a valid PostgreSQL connection URL".to_owned())?;
    Ok(DatabaseUrl(value.to_owned()))
}

fn socket_addr(value: &str, example: &str) -> Result<SocketAddr, String> {
    value.trim().parse().map_err(|_| format!("{value:?} is not an address:port such as {example}"))
}

fn log_filter(value: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(value).map_err(|e| format!("is not a valid log filter ({e})"))?;
    Ok(value.to_owned())
}

fn log_format(value: &str) -> Result<LogFormat, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "json" => Ok(LogFormat::Json),
        "pretty" => Ok(LogFormat::Pretty),
        _ => Err(format!("must be json or pretty, not {value:?}")),
    }
}

fn registration_policy(value: &str) -> Result<RegistrationPolicy, String> {
    let value = value.trim().to_ascii_lowercase();
    match value.as_str() {
        "open" => Ok(RegistrationPolicy::Open),
        "token" => Ok(RegistrationPolicy::Token),
        "closed" => Ok(RegistrationPolicy::Closed),
        _ => Err(format!("must be open, token or closed, not {value:?}")),
    }
}

fn mfa_policy(value: &str) -> Result<MfaPolicy, String> {
    let value = value.trim().to_ascii_lowercase();
    match value.as_str() {
        "off" => Ok(MfaPolicy::Off),
        "optional" => Ok(MfaPolicy::Optional),
        "required" => Ok(MfaPolicy::Required),
        _ => Err(format!("must be off, optional or required, not {value:?}")),
    }
}

/// Two rates: `PER_ADDRESS,PER_CLIENT` (`1200/1m,600/1m`); one rate sets both.
fn rate_pair(value: &str) -> Result<(Rate, Rate), String> {
    let (a, b) = value.split_once(',').unwrap_or((value, value));
    Ok((rate(a)?, rate(b)?))
}

/// A rate: `N/DURATION` (`30/1h`, `10/1m`), or a bare `N` per hour.
pub fn rate(value: &str) -> Result<Rate, String> {
    let raw = value.trim();
    let (count, period) = raw.split_once('/').unwrap_or((raw, "1h"));
    let count: u32 = count
        .trim()
        .parse()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| format!("{raw:?} is not a rate such as 30/1h or 10/1m"))?;
    let period = parse_duration(period.trim())?;
    if period.is_zero() {
        return Err("the period must be at least 1s".into());
    }
    Ok((count, period))
}

/// An `http` URL with a host (TLS to the upstream is not supported: the gateway runs beside it).
fn upstream_url(value: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(value.trim()).map_err(|_| format!("{value:?} is not an absolute URL"))?;
    if url.scheme() != "http" || url.host_str().is_none() {
        return Err("must be an http:// URL of the MCP server (the gateway runs beside it)".into());
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err("must not have a query, a fragment or user information".into());
    }
    Ok(url)
}

/// A resource URI, in its canonical form (RFC 8707).
fn resource_uri(value: &str) -> Result<String, String> {
    crate::oauth::resource::canonicalize(value.trim()).map_err(|m| m.to_string())
}

fn verify_mode(value: &str) -> Result<VerifyMode, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "jwks" => Ok(VerifyMode::Jwks),
        "introspect" | "introspection" => Ok(VerifyMode::Introspect),
        _ => Err(format!("must be jwks or introspect, not {value:?}")),
    }
}

/// An origin: `scheme://host[:port]`, nothing more.
fn origin(value: &str) -> Result<String, String> {
    let url =
        url::Url::parse(value).map_err(|_| format!("{value:?} is not an origin such as https://app.example.com"))?;
    let origin = url.origin().ascii_serialization();
    if origin == "null" || origin != value.trim_end_matches('/') {
        return Err(format!("{value:?} is not an origin such as https://app.example.com"));
    }
    Ok(origin)
}

/// `subject=X-User`: what to carry upstream, and in which header.
fn identity_header(value: &str) -> Result<(IdentityField, String), String> {
    let (what, name) = value.split_once('=').ok_or_else(|| format!("{value:?} is not WHAT=HEADER"))?;
    let field = match what.trim() {
        "subject" => IdentityField::Subject,
        "client" => IdentityField::Client,
        "scopes" => IdentityField::Scopes,
        other => return Err(format!("{other:?} is not subject, client or scopes")),
    };
    let name = name.trim();
    axum::http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("{name:?} is not a header name"))?;
    Ok((field, name.to_ascii_lowercase()))
}

/// A comma-separated list, each item parsed by `item`.
fn list<T>(value: &str, item: fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
    value.split(',').map(str::trim).filter(|p| !p.is_empty()).map(item).collect()
}

fn port(value: &str) -> Result<u16, String> {
    value
        .parse::<u16>()
        .ok()
        .filter(|n| *n != 0)
        .ok_or_else(|| format!("{value:?} is not a port; use a comma-separated list such as 8443,9443"))
}

fn address_range(value: &str) -> Result<ipnet::IpNet, String> {
    value
        .parse::<ipnet::IpNet>()
        .or_else(|_| value.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{value:?} is not an address or CIDR range"))
}

fn boolean(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("must be true or false, not {value:?}")),
    }
}

fn number_in(value: &str, min: u32, max: u32) -> Result<u32, String> {
    let n: u32 = value.trim().parse().map_err(|_| format!("must be a whole number, not {value:?}"))?;
    if n < min || n > max {
        return Err(format!("must be between {min} and {max}, not {n}"));
    }
    Ok(n)
}

/// A duration (see [`parse_duration`]) between `min` and `max` seconds.
fn duration_in(value: &str, min: u64, max: u64) -> Result<Duration, String> {
    let d = parse_duration(value)?;
    if d.as_secs() < min || d.as_secs() > max {
        return Err(format!(
            "must be between {} and {}",
            format_duration(Duration::from_secs(min)),
            format_duration(Duration::from_secs(max))
        ));
    }
    Ok(d)
}

/// Parse `90s`, `10m`, `12h`, `30d` or a bare number of seconds.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let v = value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{value:?} is not a duration such as 90s, 10m, 12h or 30d"))?;
    let factor = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => {
            return Err(format!("{value:?} is not a duration such as 90s, 10m, 12h or 30d"));
        }
    };
    n.checked_mul(factor).map(Duration::from_secs).ok_or_else(|| format!("{value:?} is too long"))
}

pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s != 0 && s % 86400 == 0 {
        format!("{}d", s / 86400)
    } else if s != 0 && s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else if s != 0 && s % 60 == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(pairs: &[(&str, &str)]) -> Sources {
        let map: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Sources::from_lookup(|k| map.get(k).map(Into::into)).unwrap()
    }

    #[test]
    fn issuer_is_normalized_without_trailing_slash() {
        assert_eq!(Issuer::parse("https://auth.example.com/").unwrap().as_str(), "https://auth.example.com");
        assert_eq!(Issuer::parse("https://Auth.Example.COM").unwrap().as_str(), "https://auth.example.com");
        assert_eq!(Issuer::parse("https://h.example/tenant/").unwrap().as_str(), "https://h.example/tenant");
        assert_eq!(Issuer::parse("https://h.example:443/x").unwrap().as_str(), "https://h.example/x");
        assert_eq!(Issuer::parse("http://localhost:8080").unwrap().as_str(), "http://localhost:8080");
        assert_eq!(Issuer::parse("http://127.0.0.1:9/").unwrap().as_str(), "http://127.0.0.1:9");
        assert_eq!(Issuer::parse("http://[::1]:9").unwrap().as_str(), "http://[::1]:9");
    }

    #[test]
    fn issuer_path() {
        assert_eq!(Issuer::parse("https://h.example").unwrap().path(), "");
        assert_eq!(Issuer::parse("https://h.example/a/b/").unwrap().path(), "/a/b");
    }

    #[test]
    fn issuer_rejections() {
        for bad in [
            "http://auth.example.com",
            "ftp://auth.example.com",
            "https://auth.example.com/?x=1",
            "https://auth.example.com/#f",
            "https://user:pw@auth.example.com",
            "auth.example.com",
            "http://localhost.evil.com",
            "",
        ] {
            assert!(Issuer::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn master_key_must_be_32_bytes() {
        let key = MasterKey::generate();
        assert_eq!(MasterKey::from_base64(&key.to_base64()).unwrap().0, key.0);
        let err = MasterKey::from_base64("c2hvcnQ=").unwrap_err();
        assert!(err.contains("32 bytes"), "{err}");
        assert!(MasterKey::from_base64("not base64 at all!").is_err());
        assert_eq!(format!("{key:?}"), "MasterKey([redacted])");
    }

    #[test]
    fn errors_name_the_key() {
        let err = Config::from_sources(&sources(&[("TESSERA_LISTEN", "nonsense")])).unwrap_err();
        assert_eq!(err.key, "TESSERA_LISTEN");
        let err = Config::from_sources(&sources(&[("TESSERA_LOG_FORMAT", "xml")])).unwrap_err();
        assert_eq!(err.key, "TESSERA_LOG_FORMAT");
        let err = Config::from_sources(&sources(&[("DATABASE_URL", "mysql://x")])).unwrap_err();
        assert_eq!(err.key, "DATABASE_URL");
        let err = Config::from_sources(&sources(&[("TESSERA_ACCESS_TOKEN_TTL", "5s")])).unwrap_err();
        assert_eq!(err.key, "TESSERA_ACCESS_TOKEN_TTL");
    }

    #[test]
    fn file_overlays_environment() {
        let mut src = sources(&[("TESSERA_LISTEN", "127.0.0.1:1"), ("TESSERA_LOG", "debug")]);
        src.overlay_toml("listen = \"127.0.0.1:2\"\naccess_token_ttl = 300\n").unwrap();
        let config = Config::from_sources(&src).unwrap();
        assert_eq!(config.listen.port(), 2);
        assert_eq!(config.log, "debug");
        assert_eq!(config.access_token_ttl, Duration::from_secs(300));
        let err = src.overlay_toml("lisen = \"x\"").unwrap_err();
        assert_eq!(err.key, "lisen");
    }

    #[test]
    fn file_keys_are_the_variable_names_without_prefix() {
        let keys: Vec<String> = SETTINGS.iter().map(SettingInfo::file_key).collect();
        for expected in
            ["database_url", "issuer", "listen", "access_token_ttl", "refresh_token_idle_ttl", "rate_limit_token"]
        {
            assert!(keys.iter().any(|k| k == expected), "{expected} missing from {keys:?}");
        }
        let mut unique = keys.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), keys.len(), "two settings share a file key");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("30d").unwrap(), Duration::from_secs(30 * 86400));
        assert_eq!(parse_duration("42").unwrap(), Duration::from_secs(42));
        assert!(parse_duration("10 minutes").is_err());
        assert!(parse_duration("-1s").is_err());
        assert_eq!(format_duration(Duration::from_secs(600)), "10m");
    }
}
