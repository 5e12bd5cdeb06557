//! The shutdown signal: SIGINT or SIGTERM from outside, or a [`Shutdown`] handle from inside
//! (tests and `gatehouse up` stop their servers with it). Servers stop accepting at the signal
//! and finish the requests already in flight.

use tokio::sync::watch;

/// A cloneable handle that triggers and observes one shutdown.
#[derive(Clone, Debug)]
pub struct Shutdown {
    sender: watch::Sender<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        Self {
            sender: watch::channel(false).0,
        }
    }

    /// A handle that also fires on SIGINT or SIGTERM.
    pub fn on_signals() -> Self {
        let shutdown = Self::new();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            signal().await;
            tracing::info!("shutdown signal received; finishing requests in flight");
            trigger.trigger();
        });
        shutdown
    }

    pub fn trigger(&self) {
        self.sender.send_replace(true);
    }

    /// Whether shutdown has begun: readiness reads it to turn not-ready at once.
    pub fn is_triggered(&self) -> bool {
        *self.sender.borrow()
    }

    /// A handle that fires `delay()` (read when this one fires, so a reloaded value counts)
    /// after this one: what the listener stops on, so that between SIGTERM and it the replica
    /// answers not-ready while still serving, and a load balancer or Kubernetes' endpoints stop
    /// sending it new connections before it stops accepting them (docs/DEPLOY.md).
    pub fn after(&self, delay: impl FnOnce() -> std::time::Duration + Send + 'static) -> Self {
        let later = Self::new();
        let (first, trigger) = (self.clone(), later.clone());
        tokio::spawn(async move {
            first.wait().await;
            let delay = delay();
            if !delay.is_zero() {
                tracing::info!(
                    delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    "not ready; still serving until the shutdown delay has passed"
                );
                tokio::time::sleep(delay).await;
            }
            trigger.trigger();
        });
        later
    }

    /// Resolves once shutdown has been triggered (at once if it already was).
    pub async fn wait(&self) {
        let mut receiver = self.sender.subscribe();
        // An error means every sender is gone, which cannot happen while `self` holds one.
        let _ = receiver.wait_for(|stopped| *stopped).await;
    }
}

async fn signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Shutdown;

    #[tokio::test(start_paused = true)]
    async fn a_delayed_handle_fires_only_once_the_delay_has_passed_after_the_first() {
        let first = Shutdown::new();
        let later = first.after(|| Duration::from_secs(5));
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(
            !later.is_triggered(),
            "nothing fires before the first handle does"
        );
        first.trigger();
        assert!(first.is_triggered());
        tokio::time::advance(Duration::from_millis(4_999)).await;
        tokio::task::yield_now().await;
        assert!(!later.is_triggered(), "still serving within the delay");
        tokio::time::advance(Duration::from_millis(1)).await;
        later.wait().await;
        assert!(later.is_triggered());
    }

    #[tokio::test]
    async fn with_no_delay_the_second_follows_the_first_at_once() {
        let first = Shutdown::new();
        let later = first.after(|| Duration::ZERO);
        first.trigger();
        later.wait().await;
        assert!(later.is_triggered());
    }
}
