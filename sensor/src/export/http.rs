//! The `/metrics` endpoint: a small blocking HTTP server (tiny_http) on its own thread, so a slow
//! scraper never stalls the capture loop.

use std::{net::SocketAddr, sync::Arc, thread};

use super::Metrics;

/// Errors starting the endpoint.
#[derive(Debug, thiserror::Error)]
#[error("serving metrics on {addr} failed: {reason}")]
pub struct ServeError {
    addr: SocketAddr,
    reason: String,
}

/// The Prometheus text exposition content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves `GET /metrics` on `addr` until the process ends. Returns the bound address (useful
/// with port 0).
pub fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<SocketAddr, ServeError> {
    let server = tiny_http::Server::http(addr).map_err(|e| ServeError {
        addr,
        reason: e.to_string(),
    })?;
    let bound = server.server_addr().to_ip().ok_or_else(|| ServeError {
        addr,
        reason: "not an IP listener".into(),
    })?;
    let header =
        tiny_http::Header::from_bytes("Content-Type", CONTENT_TYPE).map_err(|()| ServeError {
            addr,
            reason: "invalid content-type header".into(),
        })?;
    thread::Builder::new()
        .name("metrics-http".into())
        .spawn(move || {
            for request in server.incoming_requests() {
                let url = request.url();
                let response = if url == "/metrics" || url.starts_with("/metrics?") {
                    tiny_http::Response::from_string(metrics.render()).with_header(header.clone())
                } else {
                    tiny_http::Response::from_string("see /metrics\n").with_status_code(404)
                };
                if let Err(e) = request.respond(response) {
                    log::debug!("metrics client went away: {e}");
                }
            }
        })
        .map_err(|e| ServeError {
            addr,
            reason: e.to_string(),
        })?;
    Ok(bound)
}
