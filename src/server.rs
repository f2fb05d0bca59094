//! Running the router on listeners until a shutdown signal, finishing in-flight requests.

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::ConfigError;
use crate::state::AppState;
use crate::web::client_addr::Peer;
use crate::web::transport;

/// Serve on every listener until `shutdown` is cancelled, then let in-flight requests finish.
pub async fn run(state: AppState, listeners: Vec<TcpListener>, shutdown: CancellationToken) -> std::io::Result<()> {
    let app = crate::http::router(state.clone());
    let https = state.settings.issuer.is_https();
    let mut servers = tokio::task::JoinSet::new();
    for listener in listeners {
        let app = app.clone();
        let shutdown = shutdown.clone();
        let listener = transport::Listener::new(listener, https);
        servers.spawn(async move {
            axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        });
    }
    let mut result = Ok(());
    while let Some(done) = servers.join_next().await {
        match done {
            Ok(Err(e)) => {
                shutdown.cancel();
                result = Err(e);
            }
            Err(e) => {
                shutdown.cancel();
                result = Err(std::io::Error::other(e));
            }
            Ok(Ok(())) => shutdown.cancel(),
        }
    }
    state.shutdown().await;
    result
}

/// Serve Prometheus metrics on `addr` (a listener of their own) until `shutdown`.
pub async fn start_metrics(
    state: &AppState,
    addr: std::net::SocketAddr,
    shutdown: CancellationToken,
) -> Result<(), ConfigError> {
    crate::platform::metrics::install();
    crate::web::metrics::start(Some(state.pool.clone()), state.audit.clone(), addr, shutdown).await
}

/// Cancel `token` on SIGTERM or SIGINT (Ctrl-C).
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received: finishing in-flight requests"),
            _ = int.recv() => tracing::info!("SIGINT received: finishing in-flight requests"),
        }
        token.cancel();
    });
}
