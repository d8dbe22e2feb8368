//! The service's clock: the one place that reads the wall time for the facts it records. Events carry
//! millisecond timestamps (what the API shows and what the stores keep), so the time is truncated here once
//! rather than wherever it is used. The domain never reads it: [`crate::domain::decide`] is handed the time.

use chrono::{DateTime, Utc};

/// The current time, truncated to milliseconds.
pub fn now() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
}
