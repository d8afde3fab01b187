//! The benchmark message, `bench <client> <seq> <unix_nanos>`: written by
//! a sender with its clock's reading, read back by every receiver, which
//! takes the latency against its own clock. Sender and receivers share one
//! process, so one clock, and the stamp alone is enough to time a
//! delivery; any other text in the room is ignored.

/// The first word of every benchmark message.
const STAMP_WORD: &str = "bench";

/// The text of message `seq` of client `client`, stamped `unix_nanos`.
pub fn stamp(client: u32, seq: u64, unix_nanos: i128) -> String {
    format!("{STAMP_WORD} {client} {seq} {unix_nanos}")
}

/// What a benchmark message says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The sending client's number.
    pub client: u32,
    /// The message's number for that client, from 0.
    pub seq: u64,
    /// When it was sent, ns since the Unix epoch (sender's clock).
    pub unix_nanos: i128,
}

/// Read a benchmark message; `None` for any other text.
pub fn parse_stamp(text: &str) -> Option<Stamp> {
    let mut words = text.split(' ');
    if words.next()? != STAMP_WORD {
        return None;
    }
    let stamp = Stamp {
        client: words.next()?.parse().ok()?,
        seq: words.next()?.parse().ok()?,
        unix_nanos: words.next()?.parse().ok()?,
    };
    words.next().is_none().then_some(stamp)
}

/// Whole microseconds from `sent` to `received` (ns); 0 if the clock went
/// backwards.
pub fn latency_us(sent_nanos: i128, received_nanos: i128) -> u64 {
    let us = received_nanos.saturating_sub(sent_nanos).max(0) / 1000;
    u64::try_from(us).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_give_latencies() {
        let text = stamp(7, 42, 1_700_000_000_123_456_789);
        assert_eq!(text, "bench 7 42 1700000000123456789");
        let s = parse_stamp(&text).unwrap();
        assert_eq!((s.client, s.seq), (7, 42));
        assert_eq!(latency_us(s.unix_nanos, s.unix_nanos + 2_500_999), 2_500);
        assert_eq!(latency_us(s.unix_nanos, s.unix_nanos - 1), 0);
        for other in [
            "",
            "hello",
            "bench",
            "bench 1 2",
            "bench 1 2 x",
            "bench -1 2 3",
            "bench 1 2 3 4",
            "bench  1 2 3",
        ] {
            assert_eq!(parse_stamp(other), None, "{other:?}");
        }
    }
}
