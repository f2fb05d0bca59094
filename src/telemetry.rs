//! Logging: `tracing` to standard error, JSON lines (production) or human-readable (dev).
//!
//! Every line written inside a request carries the request span's fields (request id, route), so
//! one request can be followed through the log. Standard output stays free for command output.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

use crate::config::LogFormat;

pub fn init(filter: &str, format: LogFormat) {
    // sqlx reports every NOTICE (such as "relation already exists, skipping") at info.
    let filter = if filter.contains("sqlx") { filter.to_owned() } else { format!("{filter},sqlx=warn") };
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_span_events(FmtSpan::NONE);
    // A second init (tests build several servers in one process) keeps the first subscriber.
    let _ = match format {
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).flatten_event(true).try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}
