//! `tessera audit tail`: print recent audit records, and with --follow the new ones as they are stored.

use std::io::Write as _;
use std::time::Duration;

use clap::Subcommand;
use sqlx::PgPool;

use super::{db, usage};
use crate::cli::Failure;
use crate::config::parse_duration;
use crate::store;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Show recent audit records, oldest first, optionally filtered; --follow keeps printing.
    Tail(AuditTail),
}

#[derive(Debug, clap::Args)]
pub struct AuditTail {
    /// Keep printing new records as they are stored (Ctrl-C to stop).
    #[arg(long)]
    follow: bool,
    /// Only records about this client.
    #[arg(long = "client", allow_hyphen_values = true)]
    client: Option<String>,
    /// Only records about this subject (a user id, or a client id for client_credentials).
    #[arg(long)]
    subject: Option<String>,
    /// Only this event, or a family of events (`login` matches `login.failure`, ...).
    #[arg(long)]
    event: Option<String>,
    /// Only records since this time: RFC 3339 (`2026-01-31T12:00:00Z`) or a duration ago (`1h`, `7d`).
    #[arg(long)]
    since: Option<String>,
    /// How many recent records to show first.
    #[arg(long, default_value_t = 50)]
    limit: i64,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

pub async fn run(pool: &PgPool, cmd: &AuditCommand) -> Result<(), Failure> {
    match cmd {
        AuditCommand::Tail(args) => tail(pool, args).await,
    }
}

async fn tail(pool: &PgPool, args: &AuditTail) -> Result<(), Failure> {
    let since = args.since.as_deref().map(parse_since).transpose()?;
    if !(1..=100_000).contains(&args.limit) {
        return Err(usage("--limit", "must be between 1 and 100000"));
    }
    let mut filter = store::audit::Filter {
        client_id: args.client.clone(),
        subject: args.subject.clone(),
        event: args.event.clone(),
        since,
        after_id: None,
    };
    let rows = store::audit::list(pool, &filter, args.limit).await.map_err(db)?;
    for row in &rows {
        print_row(row, args.json);
    }
    if !args.follow {
        return Ok(());
    }
    filter.after_id = Some(rows.last().map_or(0, |r| r.id));
    if rows.is_empty() {
        filter.after_id =
            sqlx::query_scalar!("SELECT max(id) FROM audit_events").fetch_one(pool).await.map_err(db)?.or(Some(0));
    }
    follow(pool, filter, args.json).await
}

/// `--since`: an RFC 3339 time, or a duration before now.
fn parse_since(since: &str) -> Result<chrono::DateTime<chrono::Utc>, Failure> {
    match chrono::DateTime::parse_from_rfc3339(since) {
        Ok(t) => Ok(t.with_timezone(&chrono::Utc)),
        Err(_) => {
            let ago = parse_duration(since).map_err(|m| usage("--since", format!("{m}; or an RFC 3339 time")))?;
            Ok(chrono::Utc::now() - chrono::Duration::from_std(ago).map_err(|_| usage("--since", "is too long"))?)
        }
    }
}

/// Print the records stored after `filter.after_id`, once a second, until Ctrl-C.
async fn follow(pool: &PgPool, mut filter: store::audit::Filter, json: bool) -> Result<(), Failure> {
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let rows = store::audit::list(pool, &filter, 10_000).await.map_err(db)?;
        for row in &rows {
            print_row(row, json);
        }
        let _ = std::io::stdout().flush();
        if let Some(last) = rows.last() {
            filter.after_id = Some(last.id);
        }
    }
}

fn print_row(row: &store::audit::Row, json: bool) {
    if json {
        println!("{}", serde_json::to_string(row).unwrap_or_default());
        return;
    }
    let mut line = format!(
        "{}  {:<28} {:<12}",
        row.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        row.event,
        row.outcome
    );
    let fields = [
        ("client", &row.client_id),
        ("subject", &row.subject),
        ("resource", &row.resource),
        ("scopes", &row.scopes),
        ("source", &row.source),
        ("request", &row.request_id),
        ("digest", &row.digest),
        ("detail", &row.detail),
    ];
    for (name, value) in fields {
        if let Some(v) = value {
            if v.contains(' ') {
                line.push_str(&format!(" {name}={v:?}"));
            } else {
                line.push_str(&format!(" {name}={v}"));
            }
        }
    }
    println!("{line}");
}
