//! Per-upstream health with an exponential cool-down.

/// When an upstream is taken out of rotation and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPolicy {
    /// Consecutive failures that mark the upstream down.
    pub failure_threshold: u32,
    /// First cool-down, milliseconds.
    pub base_cooldown_ms: i64,
    /// Longest cool-down, milliseconds.
    pub max_cooldown_ms: i64,
}

impl Default for HealthPolicy {
    /// 3 failures; cool-down 30 s doubling up to 5 min.
    fn default() -> Self {
        HealthPolicy {
            failure_threshold: 3,
            base_cooldown_ms: 30_000,
            max_cooldown_ms: 300_000,
        }
    }
}

/// Health of one upstream.
///
/// After `failure_threshold` consecutive failures it is unavailable for a cool-down. When the
/// cool-down ends it is tried again ("half-open"): one more failure marks it down again with
/// twice the cool-down (up to the maximum); a success resets everything. Failures reported
/// while it is down (attempts already in flight) do not extend the cool-down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamHealth {
    policy: HealthPolicy,
    consecutive_failures: u32,
    /// Times it was marked down since the last success.
    trips: u32,
    down_until_ms: Option<i64>,
}

impl Default for UpstreamHealth {
    fn default() -> Self {
        Self::new(HealthPolicy::default())
    }
}

impl UpstreamHealth {
    /// A healthy upstream.
    pub fn new(policy: HealthPolicy) -> Self {
        UpstreamHealth {
            policy,
            consecutive_failures: 0,
            trips: 0,
            down_until_ms: None,
        }
    }

    /// Record a failed attempt (connection or session level) at `now_ms`.
    pub fn record_failure(&mut self, now_ms: i64) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        if !self.is_available(now_ms) {
            return;
        }
        if self.consecutive_failures >= self.policy.failure_threshold.max(1) {
            let factor = 1i64.checked_shl(self.trips.min(62)).unwrap_or(i64::MAX);
            let cooldown = self
                .policy
                .base_cooldown_ms
                .saturating_mul(factor)
                .min(self.policy.max_cooldown_ms);
            self.down_until_ms = Some(now_ms.saturating_add(cooldown));
            self.trips = self.trips.saturating_add(1);
        }
    }

    /// Record a successful attempt: healthy again.
    pub fn record_success(&mut self) {
        self.consecutive_failures = 0;
        self.trips = 0;
        self.down_until_ms = None;
    }

    /// Whether the upstream may be used at `now_ms`.
    pub fn is_available(&self, now_ms: i64) -> bool {
        self.down_until_ms.is_none_or(|until| now_ms >= until)
    }

    /// Whether the upstream is healthy as far as we know: not marked down since its last
    /// success. Unlike [`Self::is_available`], an expired cool-down does not make it healthy;
    /// only a success does.
    pub fn is_healthy(&self) -> bool {
        self.trips == 0
    }

    /// End of the current cool-down, if the upstream is down at `now_ms`.
    pub fn down_until(&self, now_ms: i64) -> Option<i64> {
        self.down_until_ms.filter(|&until| now_ms < until)
    }
}
