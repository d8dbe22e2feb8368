//! The admin console: one static page and its script and style, compiled into the binary (no CDN, nothing
//! on disk), served at `/console`. The page itself is public; everything it shows comes from the documented
//! API with the token the user signs in with, so it can do nothing the token could not do with curl.
//! The revenue chart is drawn by uPlot (MIT, its licence header kept in the file), vendored unmodified from npm
//! into `assets/console/` and served like the page's own script, so the strict policy below still holds.

use actix_web::HttpResponse;
use actix_web::http::header::{self, HeaderValue};

const INDEX: &str = include_str!("../../assets/console/index.html");
const SCRIPT: &str = include_str!("../../assets/console/app.js");
const STYLE: &str = include_str!("../../assets/console/app.css");
const CHART_SCRIPT: &str = include_str!("../../assets/console/uplot.js");
const CHART_STYLE: &str = include_str!("../../assets/console/uplot.css");

/// Scripts, styles and connections from this origin only; the page cannot be framed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /console` (and `/console/`): the page.
pub async fn page() -> HttpResponse {
    asset(INDEX, "text/html; charset=utf-8")
}

/// `GET /console/app.js`.
pub async fn script() -> HttpResponse {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

/// `GET /console/app.css`.
pub async fn style() -> HttpResponse {
    asset(STYLE, "text/css; charset=utf-8")
}

/// `GET /console/uplot.js`: the charting library.
pub async fn chart_script() -> HttpResponse {
    asset(CHART_SCRIPT, "text/javascript; charset=utf-8")
}

/// `GET /console/uplot.css`: the charting library's style.
pub async fn chart_style() -> HttpResponse {
    asset(CHART_STYLE, "text/css; charset=utf-8")
}

fn asset(body: &'static str, content_type: &'static str) -> HttpResponse {
    let mut response = HttpResponse::Ok().body(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The assets change only with the binary; `no-cache` makes a browser revalidate after an upgrade.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}
