//! Signals: the first SIGTERM/SIGINT starts a graceful shutdown, a second one aborts. SIGUSR2 is a
//! graceful shutdown that detaches from every task whatever `--shutdown-mode` says (an upgrade).

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// Waits for signals. Cancels `graceful` on the first (and `detach` too if it was SIGUSR2);
/// returns on the second, when the caller must exit at once with a non-zero code. That exit drops
/// polls still open: a task the service hands to one of them is lost (its execution times out),
/// which a graceful stop never risks.
pub async fn signals(
    graceful: CancellationToken,
    detach: CancellationToken,
) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut usr2 = signal(SignalKind::user_defined2())?;
    let next = async |term: &mut Signal, int: &mut Signal, usr2: &mut Signal| {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = usr2.recv() => "SIGUSR2",
        }
    };
    let first = next(&mut term, &mut int, &mut usr2).await;
    if first == "SIGUSR2" {
        detach.cancel();
        info!(
            signal = first,
            "stopping for an upgrade: no new polls, and every task is left to the next start whatever --shutdown-mode says"
        );
    } else {
        info!(
            signal = first,
            "shutting down: no new polls, open polls may still deliver (send again to exit now, dropping them)"
        );
    }
    graceful.cancel();
    let second = next(&mut term, &mut int, &mut usr2).await;
    error!(
        signal = second,
        "second signal: exiting now; a task handed to a poll still open is lost"
    );
    Ok(())
}

/// For a command run by hand (`submit`): cancels `first` on the first SIGINT/SIGTERM, returns on
/// the second (give up waiting). If the handlers cannot be set, waits forever.
pub async fn interrupted(first: CancellationToken) {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    for _ in 0..2 {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        if first.is_cancelled() {
            return;
        }
        first.cancel();
    }
}

/// Tells systemd (`Type=notify`) the worker is ready: config valid, clients built, journal resumed.
/// Without `NOTIFY_SOCKET` (not under systemd) this does nothing.
pub fn notify_ready(status: &str) {
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(status),
    ]);
}

/// Tells systemd the worker has begun to stop.
pub fn notify_stopping() {
    notify(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status("stopping"),
    ]);
}

fn notify(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "could not notify systemd");
    }
}
