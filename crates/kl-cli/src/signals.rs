//! SIGTERM and SIGINT: the end of a long-running process's input.

/// Resolves at the first SIGTERM or SIGINT, with the signal's name. Where
/// the handlers cannot be installed it never resolves, and the default
/// action (ending the process) applies.
pub async fn shutdown() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
