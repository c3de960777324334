//! Which failures are retried, and how long to wait between attempts (azure-serverless.md §4.1).

use std::time::Duration;

/// How many times a REST call is attempted and the backoff between attempts.
///
/// The delay doubles after every failed attempt, starting at `initial_delay` and capped at
/// `max_delay`. Which failures count as transient depends on the operation, see [`ApiKind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts including the first one; `1` disables retries, `0` is treated as `1`.
    pub max_attempts: u32,
    /// Wait before the second attempt.
    pub initial_delay: Duration,
    /// Upper bound of any single wait.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// Three attempts, waiting 100 ms and then 200 ms.
    fn default() -> Self {
        Self { max_attempts: 3, initial_delay: Duration::from_millis(100), max_delay: Duration::from_secs(2) }
    }
}

impl RetryPolicy {
    /// Returns a policy that attempts every call exactly once.
    pub fn none() -> Self {
        Self { max_attempts: 1, ..Self::default() }
    }

    /// Returns the wait after failed attempt number `attempt` (1-based).
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.initial_delay.saturating_mul(factor).min(self.max_delay)
    }

    /// Returns whether another attempt may follow failed attempt number `attempt` (1-based).
    pub(crate) fn has_attempt_after(&self, attempt: u32) -> bool {
        attempt < self.max_attempts.max(1)
    }
}

/// The retry class of a REST operation, as the Azure Management SDK splits them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKind {
    /// Send APIs. A 500 or a timeout may mean "delivered but slow", and retrying would deliver
    /// twice, so only statuses above 500 (502, 503, 504, …) are retried.
    Message,
    /// Every other API (idempotent): retried on any status ≥ 500, on 408 and on a timeout.
    Other,
}

/// What one attempt produced, reduced to what the retry decision needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The service answered with this status.
    Status(u16),
    /// The attempt hit the request timeout.
    Timeout,
    /// Any other transport failure (refused, reset, DNS). Not retried: the Azure SDK does not
    /// either, and it usually means a wrong endpoint rather than a transient fault.
    TransportError,
}

impl ApiKind {
    /// Returns whether an attempt that ended with `outcome` should be tried again.
    pub fn is_transient(self, outcome: Outcome) -> bool {
        match (self, outcome) {
            (ApiKind::Message, Outcome::Status(status)) => status > 500,
            (ApiKind::Message, _) => false,
            (ApiKind::Other, Outcome::Status(status)) => status >= 500 || status == 408,
            (ApiKind::Other, Outcome::Timeout) => true,
            (ApiKind::Other, Outcome::TransportError) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_apis_retry_only_above_500() {
        let kind = ApiKind::Message;
        for status in [502, 503, 504, 599] {
            assert!(kind.is_transient(Outcome::Status(status)), "{status}");
        }
        for status in [200, 202, 400, 401, 404, 408, 429, 500] {
            assert!(!kind.is_transient(Outcome::Status(status)), "{status}");
        }
        assert!(!kind.is_transient(Outcome::Timeout));
        assert!(!kind.is_transient(Outcome::TransportError));
    }

    #[test]
    fn other_apis_retry_on_5xx_408_and_timeout() {
        let kind = ApiKind::Other;
        for status in [408, 500, 502, 503, 504] {
            assert!(kind.is_transient(Outcome::Status(status)), "{status}");
        }
        for status in [200, 204, 400, 401, 404, 409, 429] {
            assert!(!kind.is_transient(Outcome::Status(status)), "{status}");
        }
        assert!(kind.is_transient(Outcome::Timeout));
        assert!(!kind.is_transient(Outcome::TransportError));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let policy = RetryPolicy {
            max_attempts: 10,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(500),
        };
        let delays: Vec<u128> = (1..=5).map(|a| policy.delay_after(a).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
        assert_eq!(policy.delay_after(1000), Duration::from_millis(500));
    }

    #[test]
    fn attempts_are_bounded() {
        let policy = RetryPolicy::default();
        assert!(policy.has_attempt_after(1));
        assert!(policy.has_attempt_after(2));
        assert!(!policy.has_attempt_after(3));
        assert!(!RetryPolicy::none().has_attempt_after(1));
        assert!(!RetryPolicy { max_attempts: 0, ..RetryPolicy::default() }.has_attempt_after(1));
    }
}
