//! `tessera prune`: run the database clean-up once now (the one every instance runs every ten
//! minutes, one at a time) and print what it deleted and what it left.

use sqlx::PgPool;

use super::{db, usage};
use crate::cli::Failure;
use crate::config::{Config, parse_duration};
use crate::platform::audit::AuditSink;
use crate::platform::maintenance::{self, Retention};

#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    /// How long the run may take (`50s`, `10m`); what is left then waits for the next run.
    #[arg(long)]
    budget: Option<String>,
}

pub async fn run(config: &Config, pool: &PgPool, args: &PruneArgs) -> Result<(), Failure> {
    let budget = match &args.budget {
        Some(text) => parse_duration(text).map_err(|e| usage("--budget", e))?,
        None => maintenance::BUDGET,
    };
    let keep = Retention {
        unauthorized_clients: config.registration_unauthorized_ttl,
        idle_clients: config.registration_idle_ttl,
        audit: config.audit_retention,
    };
    let audit = AuditSink::start(pool.clone());
    let report = maintenance::prune_database(pool, &audit, keep, budget).await.map_err(db);
    audit.shutdown().await;
    let Some(report) = report? else {
        println!("another instance is running the clean-up now; nothing done");
        return Ok(());
    };
    for (what, n) in &report.deleted {
        println!("{what:<32} {n:>10} deleted");
    }
    println!("{:<32} {:>10} deleted in {:.1} s", "in all", report.total(), report.elapsed.as_secs_f64());
    for left in &report.left {
        println!("left for the next run: {left}");
    }
    for failed in &report.failed {
        println!("failed (see the log): {failed}");
    }
    if report.failed.is_empty() { Ok(()) } else { Err(Failure::Other(anyhow::anyhow!("part of the clean-up failed"))) }
}
