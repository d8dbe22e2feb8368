//! The README walk-through: place → pay → ship, search by a product word, revenue for today.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{new_id, spawn_app};

#[actix_web::test]
async fn place_pay_ship_then_search_and_revenue() {
    let app = spawn_app().await;
    let id = new_id("smoke");
    let placed = app.place(&id, "c-1", 2, 1250).await;
    assert_eq!(placed["status"], "placed");
    assert_eq!(placed["total"], 2500);
    assert_eq!(app.pay(&id, "pay-1", 2500).await.status(), StatusCode::OK);
    let shipped = app.ship(&id).await;
    assert_eq!(shipped.headers()["etag"], "\"3\"");
    let doc = app.projected(&id, 3).await;
    assert_eq!(doc["status"], "shipped");

    let hits: serde_json::Value = app.get("/orders?q=mug", &app.admin()).await.json().await.unwrap();
    assert_eq!(hits["orders"][0]["orderId"], json!(id));
    let revenue = crate::helpers::eventually(|| async {
        let r = app.revenue_today().await;
        (r["days"][0]["paidOrders"] == 1).then_some(r)
    })
    .await;
    assert_eq!(revenue["days"][0]["grossRevenue"], 2500);
    assert_eq!(revenue["days"][0]["netRevenue"], 2500);
}
