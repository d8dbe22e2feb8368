//! The documents the embedded search view wrote most recently, in memory: `GET /orders/{id}` of an order that
//! was just commanded is answered from here without a database read or a second serialization, and the
//! projector folds the next event of such an order without reading its document back.
//!
//! Two generations of a bounded size: a write goes to the young one; when it is full it becomes the old one
//! and the oldest generation is dropped. So memory is bounded and the most recently written documents stay.
//! Only the view's writer thread changes it, after its transaction committed, so it never holds a document
//! the view file does not (it may miss one: then the file answers).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::Document;
use crate::domain::OrderId;

pub(super) struct RecentDocs {
    generations: Mutex<[HashMap<OrderId, Arc<Document>>; 2]>,
    /// Documents per generation.
    capacity: usize,
}

impl RecentDocs {
    /// Holds between `capacity` and twice as many documents.
    pub fn new(capacity: usize) -> Self {
        Self { generations: Mutex::new([HashMap::new(), HashMap::new()]), capacity: capacity.max(1) }
    }

    fn lock(&self) -> MutexGuard<'_, [HashMap<OrderId, Arc<Document>>; 2]> {
        // A panic while holding it left at worst a stale entry of a map, which the next write replaces.
        self.generations.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, id: &OrderId) -> Option<Arc<Document>> {
        let [young, old] = &*self.lock();
        young.get(id).or_else(|| old.get(id)).cloned()
    }

    /// Documents the view has just committed.
    pub fn put(&self, docs: impl IntoIterator<Item = Arc<Document>>) {
        let mut generations = self.lock();
        for doc in docs {
            let [young, old] = &mut *generations;
            old.remove(&doc.order.order_id);
            young.insert(doc.order.order_id.clone(), doc);
            if young.len() >= self.capacity {
                *old = std::mem::take(young);
            }
        }
    }

    pub fn remove(&self, id: &OrderId) {
        for generation in self.lock().iter_mut() {
            generation.remove(id);
        }
    }

    pub fn clear(&self) {
        for generation in self.lock().iter_mut() {
            generation.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Order;

    fn doc(id: &str, version: u64) -> Arc<Document> {
        let order: Order = serde_json::from_value(serde_json::json!({
            "orderId": id, "customerId": "c-1", "status": "placed", "currency": "EUR",
            "items": [{"sku": "MUG", "name": "Mug", "quantity": 1, "unitPrice": 900}],
            "total": 900, "version": version, "placedAt": "2026-11-01T10:00:00Z"
        }))
        .expect("order");
        Arc::new(Document::new(order).expect("document"))
    }

    fn id(text: &str) -> OrderId {
        OrderId::parse("orderId", text).expect("id")
    }

    #[test]
    fn keeps_the_newest_write_of_the_most_recent_documents() {
        let recent = RecentDocs::new(2);
        recent.put([doc("a", 1), doc("b", 1)]);
        recent.put([doc("a", 2)]);
        assert_eq!(recent.get(&id("a")).map(|d| d.order.version), Some(2), "the newest write wins");
        assert_eq!(recent.get(&id("b")).map(|d| d.order.version), Some(1));
        recent.put([doc("c", 1), doc("d", 1)]);
        assert!(recent.get(&id("b")).is_none(), "the oldest generation is dropped");
        assert!(recent.get(&id("c")).is_some() && recent.get(&id("d")).is_some());
        recent.remove(&id("c"));
        assert!(recent.get(&id("c")).is_none());
        recent.clear();
        assert!(recent.get(&id("d")).is_none());
    }

    #[test]
    fn the_json_is_the_order_serialized() {
        let d = doc("a", 3);
        let back: Order = serde_json::from_slice(&d.json).expect("json");
        assert_eq!(back, d.order);
    }
}
