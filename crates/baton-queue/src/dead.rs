//! Dead letters: a queued message a worker can never process is moved, unchanged, to its
//! pool's dead-letter subject `baton.dead.<pool>` (in the queue stream, with no consumer: it
//! stays until an operator acts on it) instead of being dropped or redelivered for ever:
//! - a payload that does not decode as an envelope;
//! - a message JetStream delivered `max_deliver` times without an outcome (each delivery
//!   ended in a crash, a timeout or a fault such as a missing large body): on that last
//!   delivery it is not attempted again.
//!
//! The move is published (PubAck) before the original is acknowledged, with a deterministic
//! `Nats-Msg-Id`, so a crash in between leaves at most a duplicate, never a loss. The headers
//! say why, from where and after how many deliveries.

use crate::LaneKind;

/// Why a message became a dead letter (a bounded metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeadReason {
    /// The payload is not an envelope.
    Undecodable,
    /// Delivered `max_deliver` times without an outcome.
    DeliveryLimit,
}

impl DeadReason {
    /// `undecodable` or `delivery_limit`.
    pub fn label(self) -> &'static str {
        match self {
            DeadReason::Undecodable => "undecodable",
            DeadReason::DeliveryLimit => "delivery_limit",
        }
    }
}

/// Header: the [`DeadReason`] label.
pub const REASON_HEADER: &str = "Baton-Dead-Reason";
/// Header: the lane the message came from (`new`, `retry-<n>`).
pub const LANE_HEADER: &str = "Baton-Dead-Lane";
/// Header: its stream sequence in that lane.
pub const SEQUENCE_HEADER: &str = "Baton-Dead-Sequence";
/// Header: how many times JetStream had delivered it.
pub const DELIVERIES_HEADER: &str = "Baton-Dead-Deliveries";
/// Header: the last fault, one line (never message content).
pub const DETAIL_HEADER: &str = "Baton-Dead-Detail";

/// What is recorded with a dead letter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// Why.
    pub reason: DeadReason,
    /// The lane it came from.
    pub lane: LaneKind,
    /// Its stream sequence there.
    pub stream_sequence: u64,
    /// Deliveries so far.
    pub delivered: i64,
    /// The last fault, if known.
    pub detail: String,
}

impl DeadLetter {
    /// The `Nats-Msg-Id` of the move: one dead letter per original stream sequence.
    pub fn msg_id(&self) -> String {
        format!("dead-{}", self.stream_sequence)
    }

    /// The headers, values on one line and bounded.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let one_line: String = self
            .detail
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(200)
            .collect();
        vec![
            (REASON_HEADER, self.reason.label().to_owned()),
            (LANE_HEADER, self.lane.label()),
            (SEQUENCE_HEADER, self.stream_sequence.to_string()),
            (DELIVERIES_HEADER, self.delivered.to_string()),
            (DETAIL_HEADER, one_line),
        ]
    }
}

/// Whether a message delivered `delivered` times is past retrying under `max_deliver`
/// (`<= 0`: unlimited): on its last allowed delivery it goes to the dead letters.
pub fn exhausted(delivered: i64, max_deliver: i64) -> bool {
    max_deliver > 0 && delivered >= max_deliver
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_allowed_delivery_is_not_attempted() {
        assert!(!exhausted(1, 50));
        assert!(!exhausted(49, 50));
        assert!(exhausted(50, 50));
        assert!(exhausted(51, 50));
        assert!(!exhausted(1_000, 0), "unlimited");
        assert!(!exhausted(1_000, -1), "unlimited");
    }

    #[test]
    fn headers_are_bounded_single_lines() {
        let d = DeadLetter {
            reason: DeadReason::DeliveryLimit,
            lane: LaneKind::Retry(2),
            stream_sequence: 77,
            delivered: 50,
            detail: format!("object store: missing\r\n{}", "x".repeat(500)),
        };
        assert_eq!(d.msg_id(), "dead-77");
        let h = d.headers();
        assert_eq!(h[0], (REASON_HEADER, "delivery_limit".to_owned()));
        assert_eq!(h[1], (LANE_HEADER, "retry-2".to_owned()));
        assert_eq!(h[3], (DELIVERIES_HEADER, "50".to_owned()));
        assert_eq!(h[4].1.chars().count(), 200);
        assert!(!h[4].1.contains('\n') && !h[4].1.contains('\r'));
    }
}
