//! Identifiers: queue ids for accepted messages and deterministic ids for follow-ups.

use rand::Rng;

/// Crockford base32 alphabet (no I, L, O, U): ids are case-insensitive-safe and unambiguous.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Length of a queue id.
pub const QUEUE_ID_LEN: usize = 18;

/// A new queue id: 18 Crockford base32 characters = 45 bits of `now_ms` (Unix milliseconds,
/// good until the year 3084) followed by 45 random bits.
///
/// Ids sort by acceptance time (to the millisecond) as plain strings. Uniqueness: two ids
/// collide only if made in the same millisecond *and* drawing the same 45 random bits — at
/// 100 000 messages per second that is about one collision per 80 days of sustained load,
/// and a collision only matters inside JetStream's duplicate window. 12 characters (as first
/// suggested) would leave ~20 random bits, i.e. collisions within the duplicate window at
/// ordinary rates, and a collision there silently drops a message.
pub fn new_queue_id(now_ms: i64, rng: &mut impl Rng) -> String {
    const MASK: u128 = (1 << 45) - 1;
    let time = u128::from(now_ms.max(0).unsigned_abs()) & MASK;
    let random = u128::from(rng.random::<u64>()) & MASK;
    let mut value = (time << 45) | random;
    let mut out = [0u8; QUEUE_ID_LEN];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(value & 31) as usize];
        value >>= 5;
    }
    out.iter().map(|&b| char::from(b)).collect()
}

/// What a follow-up envelope is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowUp {
    /// Deferred recipients re-published to a retry tier.
    Retry,
    /// A delivery status notification about the message.
    Dsn,
    /// A delay notice (DSN with `Action: delayed`) about the message.
    Delay,
}

/// `Nats-Msg-Id` of a follow-up published after delivery attempt `attempt` of the message
/// accepted as `origin_id`: `<id>.r<attempt>` for a retry, `<id>.dsn<attempt>` for a DSN,
/// `<id>.delay<attempt>` for a delay notice.
/// Deterministic, so a worker that crashes between publishing and acking republishes the
/// same id and JetStream stores it once.
pub fn follow_up_msg_id(origin_id: &str, attempt: u32, kind: FollowUp) -> String {
    match kind {
        FollowUp::Retry => format!("{origin_id}.r{attempt}"),
        FollowUp::Dsn => format!("{origin_id}.dsn{attempt}"),
        FollowUp::Delay => format!("{origin_id}.delay{attempt}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use std::collections::HashSet;

    #[test]
    fn queue_ids() {
        let mut rng = StdRng::seed_from_u64(7);
        let a = new_queue_id(1_700_000_000_000, &mut rng);
        let b = new_queue_id(1_700_000_000_001, &mut rng);
        assert_eq!(a.len(), QUEUE_ID_LEN);
        assert!(a < b, "{a} {b}");
        assert!(a.bytes().all(|c| ALPHABET.contains(&c)));
        let ids: HashSet<_> = (0..10_000)
            .map(|_| new_queue_id(1_700_000_000_000, &mut rng))
            .collect();
        assert_eq!(ids.len(), 10_000);
        assert_eq!(new_queue_id(-1, &mut rng)[..9], *"000000000");
    }

    #[test]
    fn follow_ups() {
        assert_eq!(follow_up_msg_id("ABC", 3, FollowUp::Retry), "ABC.r3");
        assert_eq!(follow_up_msg_id("ABC", 3, FollowUp::Dsn), "ABC.dsn3");
        assert_eq!(follow_up_msg_id("ABC", 3, FollowUp::Delay), "ABC.delay3");
    }
}
