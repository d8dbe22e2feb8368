//! The admin console (`/console`): its assets are served from the binary with a strict CSP, and a headless
//! Chromium drives it end to end (tests/console/e2e.mjs): sign in, search with live updates, an order's
//! timeline, the revenue charts (one per currency, refreshed live; a screenshot of a 30-day, 3-currency
//! chart), projections, parked events with replay and discard, rebuild, the audit log, signing out as admin
//! and in as a customer in the same tab (nothing of the admin's selection survives, no request follows it),
//! the page at 420 px, and a screenshot with real content. The browser part needs Node, playwright-core and Chromium: `scripts/test.sh` installs
//! them (scripts/services.sh) and sets `PLAYWRIGHT_PREFIX`; without it that test says "skipped".

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::header;
use crate::helpers::{eventually, new_id, spawn_app, spawn_app_poisoning};

#[actix_web::test]
async fn console_assets_are_served_from_the_binary_with_a_strict_policy() {
    let app = spawn_app().await;
    for (path, kind) in [
        ("/console", "text/html"),
        ("/console/", "text/html"),
        ("/console/app.js", "text/javascript"),
        ("/console/app.css", "text/css"),
        ("/console/uplot.js", "text/javascript"),
        ("/console/uplot.css", "text/css"),
    ] {
        // No token: the page is public, the data behind it is not.
        let response = app.request(Method::GET, path, None, None, &[]).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert!(header(&response, "content-type").unwrap_or_default().starts_with(kind), "{path}");
        let csp = header(&response, "content-security-policy").unwrap_or_default();
        assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert_eq!(header(&response, "x-content-type-options").as_deref(), Some("nosniff"));
        assert!(!response.text().await.unwrap_or_default().is_empty(), "{path}");
    }
    let page = app.request(Method::GET, "/console", None, None, &[]).await.text().await.unwrap_or_default();
    // Everything comes from this origin: no CDN.
    assert!(
        page.contains("/console/app.js") && page.contains("/console/uplot.js") && !page.contains("https://"),
        "{page}"
    );
    // The vendored chart library keeps its licence header.
    let chart = app.request(Method::GET, "/console/uplot.js", None, None, &[]).await.text().await.unwrap_or_default();
    assert!(
        chart.starts_with("/*! uPlot") && chart.contains("The MIT License"),
        "{}",
        chart.chars().take(200).collect::<String>()
    );
    let wrong = app.request(Method::POST, "/console", None, None, &[]).await;
    assert_eq!(wrong.status(), StatusCode::METHOD_NOT_ALLOWED);
}

async fn parked_count(app: &crate::helpers::TestApp) -> usize {
    let response = app.get("/admin/parked", &app.admin()).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json::<Vec<Value>>().await.map(|v| v.len()).unwrap_or_default()
}

#[actix_web::test]
async fn the_console_works_end_to_end_in_headless_chromium() {
    let Ok(prefix) = std::env::var("PLAYWRIGHT_PREFIX") else {
        println!("skipped: PLAYWRIGHT_PREFIX is not set (scripts/test.sh sets it; scripts/services.sh installs it)");
        return;
    };
    let app = spawn_app_poisoning(
        tempfile::tempdir().expect("temp dir"),
        &[("ORDERFLOW__PROJECTIONS__MAX_ATTEMPTS", "2"), ("ORDERFLOW__PROJECTIONS__RETRY_BACKOFF_MS", "5")],
        "poisoned-",
    )
    .await;
    let paid = new_id("console-paid");
    app.place(&paid, "c-console", 2, 1250).await;
    assert_eq!(app.pay(&paid, "pay-console", 2500).await.status(), StatusCode::OK);
    app.projected(&paid, 2).await;
    let poison = new_id("poisoned");
    app.place(&poison, "c-console", 1, 100).await;
    // Two events of the order: the second waits behind the first in each view.
    assert_eq!(app.pay(&poison, "pay-poisoned", 100).await.status(), StatusCode::OK);
    let (alice, bob) = (new_id("alice-order"), new_id("bob-order"));
    app.place(&alice, "alice", 1, 700).await;
    app.place(&bob, "bob", 3, 990).await;
    app.projected(&alice, 1).await;
    app.projected(&bob, 1).await;
    // Parked in both views before the browser looks.
    eventually(|| async { (parked_count(&app).await >= 4).then_some(()) }).await;
    let before = parked_count(&app).await;

    let screenshot = app.dir.path().join("console.png");
    // Kept after the test, to be looked at: target/console-e2e/.
    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-e2e");
    std::fs::create_dir_all(&shots).expect("target/console-e2e");
    let chart = shots.join("revenue-30-days-3-currencies.png");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/console/e2e.mjs");
    let mut command = std::process::Command::new("node");
    command
        .arg(script)
        .env("PLAYWRIGHT_PREFIX", &prefix)
        .env("CONSOLE_URL", &app.address)
        .env("ADMIN_TOKEN", app.admin())
        .env("PAID_ORDER", &paid)
        .env("PAID_AMOUNT", "2500")
        .env("POISON_ORDER", &poison)
        .env("LIVE_ORDER", new_id("console-live"))
        .env("SCREENSHOT", &screenshot)
        .env("CHART_SCREENSHOT", &chart)
        .env("NARROW_SCREENSHOT", shots.join("orders-420px.png"))
        .env("YEAR_SCREENSHOT", shots.join("revenue-366-days.png"))
        .env("ALICE_TOKEN", app.customer("alice"))
        .env("ALICE_ORDER", &alice)
        .env("BOB_ORDER", &bob);
    // The service runs on this test's thread: wait for the browser on another one.
    let output = actix_web::rt::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("node runs (scripts/test.sh installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "console e2e failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("all checks passed"), "{stdout}");

    // What the clicks did, seen from the server: exactly one parked event discarded, the live order placed.
    assert_eq!(parked_count(&app).await, before - 1);
    let png = std::fs::read(&screenshot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "screenshot of {} bytes", png.len());
    let png = std::fs::read(&chart).expect("chart screenshot written");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "chart screenshot of {} bytes", png.len());
}
