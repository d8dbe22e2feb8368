//! The ceiling: an actix-web server with orderflow's routes whose handlers only parse the same JSON bodies
//! and answer (a command echoes its body back, a query answers a canned document of the real size). Driven
//! by the same load, it shows what HTTP + JSON alone cost on this machine; orderflow is reported as a ratio
//! of it. It runs in the bench's process on its own thread and actix `System`, with actix's default worker
//! count (one per core), like `orderflow serve`.

use std::net::TcpListener;
use std::sync::mpsc;
use std::thread::JoinHandle;

use actix_web::dev::ServerHandle;
use actix_web::http::header;
use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context as _;
use serde_json::Value;

/// The names its threads start with: its `System` thread and actix's workers (`actix-rt|system:0|arbiter:N`).
pub const THREAD_PREFIXES: [&str; 2] = ["bench-baseline", "actix-rt"];

pub struct Baseline {
    pub url: String,
    handle: ServerHandle,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

/// An order document as orderflow answers it (a placed, paid order with two lines).
const DOC: &str = r#"{"orderId":"b1a2-17-1234","customerId":"cust-17","status":"paid","currency":"EUR","items":[{"sku":"MUG-01","name":"Blue ceramic mug","quantity":2,"unitPrice":1250},{"sku":"TEA-01","name":"Green tea loose leaf","quantity":1,"unitPrice":899}],"total":3399,"version":2,"placedAt":"2026-01-01T12:00:00.000Z","paidAt":"2026-01-01T12:00:01.000Z","paymentId":"pay-b1a2-17-1234"}"#;

impl Baseline {
    pub fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the baseline server")?;
        let port = listener.local_addr()?.port();
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new().name("bench-baseline".into()).spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let page = web::Bytes::from(format!(
                    r#"{{"orders":[{}],"nextCursor":null,"estimatedTotal":20}}"#,
                    vec![DOC; 20].join(",")
                ));
                let server = HttpServer::new(move || {
                    let page = page.clone();
                    App::new()
                        .route("/orders", web::post().to(|body: web::Bytes| async move { command(&body, 201, 1) }))
                        .route(
                            "/orders",
                            web::get().to(move || {
                                let page = page.clone();
                                async move { HttpResponse::Ok().content_type("application/json").body(page) }
                            }),
                        )
                        .route(
                            "/orders/{id}",
                            web::get().to(|| async {
                                HttpResponse::Ok()
                                    .insert_header((header::ETAG, "\"2\""))
                                    .content_type("application/json")
                                    .body(DOC)
                            }),
                        )
                        .route(
                            "/orders/{id}/confirm-payment",
                            web::post().to(|b: web::Bytes| async move { command(&b, 200, 2) }),
                        )
                        .route("/orders/{id}/ship", web::post().to(|b: web::Bytes| async move { command(&b, 200, 3) }))
                        .route(
                            "/orders/{id}/cancel",
                            web::post().to(|b: web::Bytes| async move { command(&b, 200, 3) }),
                        )
                })
                .listen(listener)?
                .run();
                let _ = tx.send(server.handle());
                server.await
            })
        })?;
        let handle = rx.recv().context("the baseline server did not start")?;
        Ok(Self { url: format!("http://127.0.0.1:{port}"), handle, thread: Some(thread) })
    }

    /// Stops the server (gracefully) and waits for its thread.
    pub async fn stop(mut self) {
        self.handle.stop(true).await;
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// Parses the body as JSON (400 if it is not an object) and answers it back with an ETag, like a command.
fn command(body: &[u8], status: u16, version: u64) -> HttpResponse {
    match serde_json::from_slice::<Value>(body) {
        Ok(value) if value.is_object() => {
            let mut response = if status == 201 { HttpResponse::Created() } else { HttpResponse::Ok() };
            response
                .insert_header((header::ETAG, format!("\"{version}\"")))
                .content_type("application/json")
                .body(serde_json::to_vec(&value).unwrap_or_default())
        }
        _ => HttpResponse::BadRequest().finish(),
    }
}
