//! Graceful shutdown in two steps. `drain` fires first: listeners stop accepting, connections
//! are told to finish, and standalone GET streams (which clients resume elsewhere with
//! `Last-Event-ID`) end at once. `deadline` fires `drain_timeout` later: every remaining stream
//! ends and connections still open are closed.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Shutdown signals shared by listeners, connections and relayed streams.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    drain: CancellationToken,
    deadline: CancellationToken,
}

impl Shutdown {
    /// New, not yet triggered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts draining now and fires the hard deadline after `drain_timeout`.
    pub fn trigger(&self, drain_timeout: Duration) {
        if self.drain.is_cancelled() {
            return;
        }
        self.drain.cancel();
        let deadline = self.deadline.clone();
        tokio::spawn(async move {
            tokio::time::sleep(drain_timeout).await;
            deadline.cancel();
        });
    }

    /// Fires the hard deadline immediately.
    pub fn force(&self) {
        self.drain.cancel();
        self.deadline.cancel();
    }

    /// Cancelled when draining starts.
    pub fn drain(&self) -> &CancellationToken {
        &self.drain
    }

    /// Cancelled when the drain deadline passes.
    pub fn deadline(&self) -> &CancellationToken {
        &self.deadline
    }
}
