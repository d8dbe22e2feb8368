//! Failures on purpose, through the application's adapter seam (`orderflow::app::Adapters`): every test app's
//! views and bridge sinks are wrapped in a [`PoisonSwitch`] that is off until a test sets a rule.
//!
//! A rule names the orders whose events fail, by id prefix:
//! - `prefix`: the views refuse every event of those orders (as a view refuses a poison event);
//! - `prefix:EventType`: only events of that type;
//! - `panic!prefix`: the views panic instead (a crash, for the projector's supervisor);
//! - `bridge!prefix`: the Streams bridge panics before publishing a page with such an event (distributed
//!   profile), and the views are not affected.
//!
//! Tests set the rule to `""` at run time to "fix" the failure before replaying.

use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use orderflow::app::Adapters;
use orderflow::feed::{EventSink, FeedError};
use orderflow::store::StoredEvent;
use orderflow::views::{ApplyReport, Projection, Rebuilder, ViewError};

/// The prefix of a rule that crashes the bridge instead of the views.
const BRIDGE_CRASH: &str = "bridge!";

#[derive(Clone, Default)]
pub struct PoisonSwitch(Arc<RwLock<String>>);

impl PoisonSwitch {
    pub fn set(&self, rule: &str) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = rule.to_owned();
    }

    fn rule(&self) -> String {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether a view should fail on this event: `Some(true)` to panic, `Some(false)` to refuse it.
    fn poisons(&self, event: &StoredEvent) -> Option<bool> {
        let rule = self.rule();
        if rule.starts_with(BRIDGE_CRASH) {
            return None;
        }
        let (panics, rule) = match rule.strip_prefix("panic!") {
            Some(rest) => (true, rest),
            None => (false, rule.as_str()),
        };
        let (prefix, event_type) = match rule.split_once(':') {
            Some((prefix, event_type)) => (prefix, Some(event_type)),
            None => (rule, None),
        };
        let hit = !prefix.is_empty()
            && event.order_id.as_str().starts_with(prefix)
            && event_type.is_none_or(|t| t == event.event.type_name());
        hit.then_some(panics)
    }

    fn crashes_bridge(&self, event: &StoredEvent) -> bool {
        let rule = self.rule();
        rule.strip_prefix(BRIDGE_CRASH)
            .is_some_and(|prefix| !prefix.is_empty() && event.order_id.as_str().starts_with(prefix))
    }

    /// The application's adapters wrapped in this switch.
    pub fn adapters(&self) -> Adapters {
        let (views, sinks) = (self.clone(), self.clone());
        Adapters {
            view: Some(Arc::new(move |inner| Arc::new(Poisonable { inner, switch: views.clone() }))),
            sink: Some(Arc::new(move |inner| Arc::new(CrashingSink { inner, switch: sinks.clone() }))),
        }
    }
}

/// A view behind the switch.
struct Poisonable {
    inner: Arc<dyn Projection>,
    switch: PoisonSwitch,
}

#[async_trait]
impl Projection for Poisonable {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn apply(&self, events: &[StoredEvent], checkpoint: Option<u64>) -> Result<ApplyReport, ViewError> {
        for event in events {
            match self.switch.poisons(event) {
                Some(true) => panic!("injected panic for order {}", event.order_id),
                Some(false) => {
                    return Err(ViewError::Rejected(format!("injected failure for order {}", event.order_id)));
                }
                None => {}
            }
        }
        self.inner.apply(events, checkpoint).await
    }

    async fn checkpoint(&self) -> Result<u64, ViewError> {
        self.inner.checkpoint().await
    }

    async fn reset_checkpoint(&self) -> Result<(), ViewError> {
        self.inner.reset_checkpoint().await
    }

    async fn skip(&self, event: &StoredEvent) -> Result<(), ViewError> {
        self.inner.skip(event).await
    }

    async fn rebuild(&self) -> Result<Box<dyn Rebuilder>, ViewError> {
        self.inner.rebuild().await
    }
}

/// A bridge sink behind the switch: it panics before anything of the page is published, so the restarted
/// bridge reads the page again from its checkpoint.
struct CrashingSink {
    inner: Arc<dyn EventSink>,
    switch: PoisonSwitch,
}

#[async_trait]
impl EventSink for CrashingSink {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn publish(&self, events: &[StoredEvent]) -> Result<(), FeedError> {
        if let Some(event) = events.iter().find(|e| self.switch.crashes_bridge(e)) {
            panic!("injected bridge crash for order {}", event.order_id);
        }
        self.inner.publish(events).await
    }
}
