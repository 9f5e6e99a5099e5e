//! How a daemon stops: SIGTERM (systemd) or Ctrl-C cancel one token that every task watches.

use tokio_util::sync::CancellationToken;

/// A token cancelled at the first SIGTERM or Ctrl-C (SIGINT). Call it inside a Tokio runtime.
pub fn cancel_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
        let sigterm = async {
            match term {
                Ok(mut t) => {
                    t.recv().await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch SIGTERM: only Ctrl-C stops this");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            _ = sigterm => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutting down");
        cancel.cancel();
    });
    token
}
