//! W3C trace context end to end: a command's `traceparent` is continued by the service, stored with the
//! event and carried by the feed, so the HTTP request's log lines and the projection's share one trace id.

use reqwest::StatusCode;

use crate::helpers::{new_id, order_body, spawn_process_with};

#[test]
fn a_commands_trace_id_reaches_the_projection_that_applies_its_event() {
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("stderr.log");
    let mut process = spawn_process_with(
        dir.path(),
        &[("ORDERFLOW__LOG__LEVEL", "debug"), ("ORDERFLOW__LOG__FORMAT", "json")],
        std::fs::File::create(&log).expect("log file"),
    );
    let settings =
        orderflow::config::Settings::load_with(None, crate::helpers::test_env(dir.path(), &[])).expect("settings");
    let admin = orderflow::auth::Authenticator::new(&settings.auth, crate::helpers::SECRET)
        .mint("admin", orderflow::auth::Role::Admin, 600)
        .expect("token");
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let id = new_id("traced");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let placed = client
            .post(format!("{}/orders", process.address))
            .bearer_auth(&admin)
            .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
            .json(&order_body(&id, "c-trace", 1, 100))
            .send()
            .await
            .expect("answered");
        assert_eq!(placed.status(), StatusCode::CREATED);
    });
    // Both projections log the event once they applied it (on the distributed profile, after the bridge and
    // the broker): wait for the two lines, then stop.
    let projected = |text: &str| -> Vec<serde_json::Value> {
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|l| l["fields"]["message"] == "event projected" && l["fields"]["order_id"] == id.as_str())
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while projected(&std::fs::read_to_string(&log).unwrap_or_default()).len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the projections never logged the event: {}",
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("ERROR") || l.contains("WARN"))
                .take(5)
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    process.stop();
    let text = std::fs::read_to_string(&log).expect("log");
    let lines: Vec<serde_json::Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let carries = |line: &serde_json::Value| line.to_string().contains(trace_id);
    let projected = projected(&text);
    assert!(projected.len() >= 2, "both projections log the event: {projected:?}");
    assert!(projected.iter().all(&carries), "with the command's trace id: {projected:?}");
    // The request's own span carries it too (a continued trace, not a new one).
    assert!(lines.iter().any(|l| carries(l) && l.to_string().contains("http.request")), "no http.request span line");
}
