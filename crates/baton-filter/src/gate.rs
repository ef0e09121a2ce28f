//! Each filter's bounds: at most `max_concurrent` calls in flight (a semaphore; when every
//! permit is taken the call returns [`Outcome::Busy`] at once — the session answers `451 4.7.1`
//! instead of waiting, so a slow scanner never queues sessions without bound) and a timeout
//! over the whole call (connect, send, answer).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::FilterError;
use crate::verdict::Verdict;

/// What one filter call came to, before its failure mode is applied.
#[derive(Debug)]
pub enum Outcome {
    /// The filter answered.
    Answered {
        /// Its verdict.
        verdict: Verdict,
        /// What it said, for logs (score and symbols, signature name, reason); never shown
        /// to the client.
        detail: String,
    },
    /// The filter's concurrency bound was reached; it was not called.
    Busy,
    /// The call failed or timed out.
    Failed(FilterError),
}

/// A filter's concurrency bound and timeout. Cloning shares the permits.
#[derive(Clone, Debug)]
pub struct Gate {
    permits: Arc<Semaphore>,
    max: usize,
    timeout: Duration,
}

impl Gate {
    /// At most `max_concurrent` calls at once (at least 1), each bounded by `timeout`.
    pub fn new(max_concurrent: usize, timeout: Duration) -> Gate {
        let max = max_concurrent.max(1);
        Gate {
            permits: Arc::new(Semaphore::new(max)),
            max,
            timeout,
        }
    }

    /// The timeout of one call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.max.saturating_sub(self.permits.available_permits())
    }

    /// Runs `call` if a permit is free (else [`Outcome::Busy`]), bounded by the timeout.
    pub async fn run<F, Fut>(&self, call: F) -> Outcome
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(Verdict, String), FilterError>>,
    {
        let Ok(_permit) = self.permits.clone().try_acquire_owned() else {
            return Outcome::Busy;
        };
        match tokio::time::timeout(self.timeout, call()).await {
            Ok(Ok((verdict, detail))) => Outcome::Answered { verdict, detail },
            Ok(Err(e)) => Outcome::Failed(e),
            Err(_) => Outcome::Failed(FilterError::Timeout(self.timeout)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_gate_answers_busy_at_once_and_frees_its_permit() {
        let gate = Gate::new(1, Duration::from_secs(3600));
        let (entered_tx, entered_rx) = tokio::sync::oneshot::channel::<()>();
        let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
        let held = {
            let gate = gate.clone();
            tokio::spawn(async move {
                gate.run(|| async move {
                    let _ = entered_tx.send(());
                    let _ = release_rx.await;
                    Ok((Verdict::accept(), String::new()))
                })
                .await
            })
        };
        entered_rx
            .await
            .unwrap_or_else(|_| panic!("call did not start"));
        assert_eq!(gate.in_flight(), 1);
        let second = gate
            .run(|| async { Ok((Verdict::reject("x"), String::new())) })
            .await;
        assert!(matches!(second, Outcome::Busy), "{second:?}");
        let _ = release_tx.send(());
        let first = held.await.unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(first, Outcome::Answered { .. }), "{first:?}");
        assert_eq!(gate.in_flight(), 0);
        let third = gate
            .run(|| async { Ok((Verdict::accept(), String::new())) })
            .await;
        assert!(matches!(third, Outcome::Answered { .. }), "{third:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_past_the_timeout_fails_with_timeout() {
        let gate = Gate::new(2, Duration::from_secs(5));
        let outcome = gate
            .run(std::future::pending::<Result<(Verdict, String), FilterError>>)
            .await;
        assert!(
            matches!(outcome, Outcome::Failed(FilterError::Timeout(d)) if d == Duration::from_secs(5)),
            "{outcome:?}"
        );
        assert_eq!(gate.in_flight(), 0);
    }
}
