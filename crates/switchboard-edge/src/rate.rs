//! [`MessageRate`]: a token bucket (bursts up to the per-second count): how many hub messages a
//! connection may send per second on every transport, and how many sockets one address may
//! open per second (see [`crate::Admission`]).

use tokio::time::Instant;

/// The text of the Close message a connection over its rate gets.
pub(crate) const RATE_EXCEEDED: &str =
    "Connection closed with an error. The client sent more messages per second than allowed.";

/// See the module docs.
#[derive(Debug)]
pub(crate) struct MessageRate {
    per_second: f64,
    tokens: f64,
    last: Instant,
}

impl MessageRate {
    /// A full bucket, or `None` when `per_second` is 0 (no cap).
    pub(crate) fn new(per_second: u32) -> Option<Box<MessageRate>> {
        (per_second > 0).then(|| Box::new(MessageRate::full(per_second)))
    }

    pub(crate) fn full(per_second: u32) -> MessageRate {
        let per_second = f64::from(per_second.max(1));
        MessageRate { per_second, tokens: per_second, last: Instant::now() }
    }

    /// Whether the bucket would be full at `now` (nothing to remember about it).
    pub(crate) fn is_full(&self, now: Instant) -> bool {
        self.tokens + now.saturating_duration_since(self.last).as_secs_f64() * self.per_second >= self.per_second
    }

    /// Takes one message at `now`; `false` when the connection is over its rate.
    pub(crate) fn allow(&mut self, now: Instant) -> bool {
        let refill = now.saturating_duration_since(self.last).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + refill).min(self.per_second);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_up_to_the_rate_then_refills_with_time() {
        let mut rate = MessageRate::new(5).unwrap();
        let start = rate.last;
        assert_eq!((0..5).filter(|_| rate.allow(start)).count(), 5, "a burst of 5");
        assert!(!rate.allow(start), "the 6th in the same instant");
        assert!(rate.allow(start + Duration::from_millis(200)), "one more after 1/5 s");
        assert!(!rate.allow(start + Duration::from_millis(200)));
        let later = start + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| rate.allow(later)).count(), 5, "never more than the burst");
        assert!(MessageRate::new(0).is_none());
    }
}
