//! What keeps a view up to date besides the actor that drives it (`actors::projector`): the live status
//! every supervised feed actor reports into, the parking lot of events a view refuses, and the rebuild of a
//! view from the write model. Nothing here is an actor, so the actors (projectors, the Streams bridge) and the
//! admin facade (`actors::projections`) all depend on this module and it depends on none of them.

pub mod parking;
pub mod rebuild;
pub mod status;

pub use status::{ProjectionInfo, ProjectionStatus, ProjectorState, RebuildProgress};

use std::time::Duration;

/// Exponential backoff from `first`, with up to 25 % jitter, bounded at 30 s: for a step that failed
/// `failures` times in a row, or an actor restarting after as many crashes.
pub fn backoff(first: Duration, failures: u64) -> Duration {
    let first = u64::try_from(first.as_millis()).unwrap_or(u64::MAX).max(1);
    let base = first.saturating_mul(1 << failures.min(9)).min(30_000);
    let jitter = rand::random_range(0..=base / 4);
    Duration::from_millis(base + jitter)
}

/// The first backoff of a projector's retries and of a rebuild's.
pub const FIRST_RETRY: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_bounded() {
        let first = Duration::from_millis(200);
        // Jitter is at most a quarter, so one doubling more is always longer.
        assert!(backoff(first, 1) < backoff(first, 2));
        assert!(backoff(first, 0) >= first);
        for failures in [0, 1, 10, 100, u64::MAX] {
            assert!(backoff(first, failures) <= Duration::from_millis(37_500));
        }
    }
}
