//! Leases: which instance works on a shared resource (a DynamoDB Streams shard for the bridge) when several
//! run. One item per resource in the checkpoints table, `lease#<resource>`, with its `owner` and a `counter`
//! the owner bumps on every renewal. As in the Kinesis Client Library, expiry does not trust clocks across
//! machines: another instance takes a lease over only after *it* has watched the counter stand still for a
//! whole lease period, and it takes it with a conditional write on that counter, so of two instances racing
//! for a lease exactly one wins. An instance that stops renewing (it died, or lost DynamoDB) loses its leases
//! one period later; one that stops cleanly hands them back at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;

use crate::aws::attr::{self, num, string};
use crate::aws::error_text;

#[derive(Debug, thiserror::Error)]
#[error("lease table unavailable: {0}")]
pub struct LeaseError(String);

/// What this instance saw of a lease it does not hold: the counter and when (by its own clock) it changed.
#[derive(Debug, Clone, Copy)]
struct Observed {
    owner_counter: u64,
    since: Instant,
}

pub struct Leases {
    client: aws_sdk_dynamodb::Client,
    table: String,
    owner: String,
    period: Duration,
    /// Leases of others, as last seen.
    observed: Mutex<HashMap<String, Observed>>,
    /// When this instance last renewed each lease it holds (renewals are spread to a third of a period).
    renewed: Mutex<HashMap<String, Instant>>,
}

fn key(resource: &str) -> AttributeValue {
    string(format!("lease#{resource}"))
}

impl Leases {
    /// `owner` names this instance (unique per process); `period` is how long a silent owner keeps a lease.
    pub fn new(client: aws_sdk_dynamodb::Client, table: String, owner: String, period: Duration) -> Self {
        Self { client, table, owner, period, observed: Mutex::new(HashMap::new()), renewed: Mutex::new(HashMap::new()) }
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Holds (takes, renews or takes over) the lease on `resource`: true when this instance holds it now.
    pub async fn hold(&self, resource: &str) -> Result<bool, LeaseError> {
        let fresh = self.renewed.lock().map(|r| r.get(resource).is_some_and(|t| t.elapsed() < self.period / 3));
        if fresh.unwrap_or(false) {
            return Ok(true);
        }
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("id", key(resource))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| LeaseError(error_text(&e)))?;
        let held = match item.item() {
            None => self.write(resource, None).await?,
            Some(item) => {
                let owner = attr::s(item, "owner").map_err(LeaseError)?;
                let counter: u64 = attr::n(item, "counter").map_err(LeaseError)?;
                if owner == self.owner {
                    self.write(resource, Some(counter)).await?
                } else if self.expired(resource, counter) {
                    tracing::info!(resource, previous = owner, "taking over a lease its owner stopped renewing");
                    self.write(resource, Some(counter)).await?
                } else {
                    false
                }
            }
        };
        if let Ok(mut renewed) = self.renewed.lock() {
            if held {
                renewed.insert(resource.to_owned(), Instant::now());
            } else {
                renewed.remove(resource);
            }
        }
        Ok(held)
    }

    /// Whether another owner's lease has stood still (same counter) for a whole period, by this clock.
    fn expired(&self, resource: &str, counter: u64) -> bool {
        let Ok(mut observed) = self.observed.lock() else { return false };
        let seen =
            observed.entry(resource.to_owned()).or_insert(Observed { owner_counter: counter, since: Instant::now() });
        if seen.owner_counter != counter {
            *seen = Observed { owner_counter: counter, since: Instant::now() };
            return false;
        }
        seen.since.elapsed() >= self.period
    }

    /// Writes the lease as this instance's with the counter bumped, on the condition that it is still as read
    /// (`counter`, or absent for `None`). False when another instance wrote it first.
    async fn write(&self, resource: &str, counter: Option<u64>) -> Result<bool, LeaseError> {
        let next = counter.map_or(1, |c| c + 1);
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("id", key(resource))
            .item("owner", string(&self.owner))
            .item("counter", num(next));
        let request = match counter {
            None => request.condition_expression("attribute_not_exists(id)"),
            Some(c) => request.condition_expression("#counter = :seen").expression_attribute_values(":seen", num(c)),
        };
        let request = match counter {
            None => request,
            Some(_) => request.expression_attribute_names("#counter", "counter"),
        };
        match request.send().await {
            Ok(_) => {
                if let Ok(mut observed) = self.observed.lock() {
                    observed.remove(resource);
                }
                Ok(true)
            }
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(false),
            Err(e) => Err(LeaseError(error_text(&e))),
        }
    }

    /// Hands a lease back (a clean stop): another instance may take it at once.
    pub async fn release(&self, resource: &str) {
        if let Ok(mut renewed) = self.renewed.lock() {
            renewed.remove(resource);
        }
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("id", key(resource))
            .condition_expression("#owner = :me")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":me", string(&self.owner))
            .send()
            .await;
        if let Err(e) = result
            && !e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception())
        {
            tracing::warn!(resource, error = %error_text(&e), "could not hand a lease back; it expires instead");
        }
    }
}

/// This instance's name as a lease owner and as a static Kafka group member: kept in `<data_dir>/instance_id`
/// (made on first run), so that a restarted instance takes its own leases and partitions back at once instead of
/// waiting a lease period or a session timeout for them.
pub fn instance_id(data_dir: &std::path::Path) -> std::io::Result<String> {
    let path = data_dir.join("instance_id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    crate::files::private_dir(data_dir)?;
    let id = uuid::Uuid::now_v7().to_string();
    crate::files::replace_atomically(&path, id.as_bytes())?;
    Ok(id)
}
