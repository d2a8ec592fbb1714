//! Prometheus metrics of the long-running processes (`keyvol kms serve
//! --metrics ADDR`, `keyvol volume attach --metrics ADDR`): the `metrics`
//! facade records, `metrics-exporter-prometheus` renders, and a small
//! HTTP/1.1 listener here answers `GET /metrics` in the Prometheus text
//! format.
//!
//! Names (all with the process's global labels, e.g. `volume_id`):
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `keyvol_kms_requests_total` | counter | `operation`, `outcome` (`ok` or the AWS error name) |
//! | `keyvol_kms_request_duration_seconds` | histogram | `operation` |
//! | `keyvol_volume_read_bytes_total`, `keyvol_volume_written_bytes_total` | counter | |
//! | `keyvol_volume_read_ops_total`, `keyvol_volume_write_ops_total` | counter | |
//! | `keyvol_volume_errors_total` | counter | `op` (`read`, `write`, `fsync`, ...) |
//! | `keyvol_volume_hydration_chunks_done`, `..._total` | gauge | |
//! | `keyvol_volume_snapshot_chunks_read_total` | counter | |
//! | `keyvol_volume_snapshot_cut_chunks` | gauge | |

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Latency buckets of the request histograms, in seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder for this process (once; later calls
/// return the first handle) with `labels` on every metric.
pub fn install(labels: &[(&str, &str)]) -> Result<PrometheusHandle, String> {
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let mut b = PrometheusBuilder::new()
        .set_buckets(LATENCY_BUCKETS)
        .map_err(|e| format!("metrics buckets: {e}"))?;
    for (k, v) in labels {
        b = b.add_global_label(*k, *v);
    }
    let handle = b
        .install_recorder()
        .map_err(|e| format!("installing the metrics recorder: {e}"))?;
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// Serves `GET /metrics` on `addr` from a background thread; returns the
/// bound address (`127.0.0.1:0` picks a free port).
pub fn serve(addr: &str, handle: PrometheusHandle) -> Result<SocketAddr, String> {
    let sock: SocketAddr = addr
        .parse()
        .map_err(|e| format!("--metrics {addr}: {e}; expected ADDR:PORT such as 127.0.0.1:9100"))?;
    let listener =
        TcpListener::bind(sock).map_err(|e| format!("--metrics {addr}: cannot listen: {e}"))?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("--metrics {addr}: {e}"))?;
    std::thread::Builder::new()
        .name("keyvol-metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let handle = handle.clone();
                std::thread::spawn(move || {
                    let _ = answer(conn, &handle);
                });
            }
        })
        .map_err(|e| format!("starting the metrics thread: {e}"))?;
    Ok(bound)
}

/// Installs the recorder and serves it: what `--metrics ADDR` does.
pub fn install_and_serve(addr: &str, labels: &[(&str, &str)]) -> Result<SocketAddr, String> {
    let handle = install(labels)?;
    serve(addr, handle)
}

fn answer(conn: TcpStream, handle: &PrometheusHandle) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Read the headers to their end; a scrape has no body.
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, ctype, body) = if method != "GET" {
        (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_string(),
        )
    } else if path == "/metrics" || path.starts_with("/metrics?") {
        handle.run_upkeep();
        ("200 OK", "text/plain; version=0.0.4", handle.render())
    } else {
        (
            "404 Not Found",
            "text/plain",
            "metrics are at /metrics\n".to_string(),
        )
    };
    let mut out = conn;
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    out.flush()
}

/// One KMS API request: counted by operation and outcome, timed.
pub fn kms_request(operation: &str, outcome: &str, elapsed: Duration) {
    let operation = if crate::kms::OPERATIONS.contains(&operation) {
        operation.to_string()
    } else {
        // Unknown names stay out of the label set (no cardinality attack).
        "unknown".to_string()
    };
    metrics::counter!("keyvol_kms_requests_total", "operation" => operation.clone(), "outcome" => outcome.to_string())
        .increment(1);
    metrics::histogram!("keyvol_kms_request_duration_seconds", "operation" => operation)
        .record(elapsed.as_secs_f64());
}

/// A device read of `bytes` bytes that succeeded.
pub fn volume_read(bytes: usize) {
    metrics::counter!("keyvol_volume_read_bytes_total").increment(bytes as u64);
    metrics::counter!("keyvol_volume_read_ops_total").increment(1);
}

/// A device write of `bytes` bytes that succeeded.
pub fn volume_write(bytes: usize) {
    metrics::counter!("keyvol_volume_written_bytes_total").increment(bytes as u64);
    metrics::counter!("keyvol_volume_write_ops_total").increment(1);
}

/// A failed device operation (`read`, `write`, `fsync`, ...).
pub fn volume_error(op: &str) {
    metrics::counter!("keyvol_volume_errors_total", "op" => op.to_string()).increment(1);
}

/// Background hydration: `done` of `total` chunks fetched.
pub fn hydration_progress(done: u64, total: u64) {
    metrics::gauge!("keyvol_volume_hydration_chunks_done").set(done as f64);
    metrics::gauge!("keyvol_volume_hydration_chunks_total").set(total as f64);
}

/// A snapshot cut of `chunks` chunks was made.
pub fn snapshot_cut(chunks: usize) {
    metrics::gauge!("keyvol_volume_snapshot_cut_chunks").set(chunks as f64);
}

/// A snapshot reader fetched one chunk of a cut.
pub fn snapshot_chunk_read() {
    metrics::counter!("keyvol_volume_snapshot_chunks_read_total").increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_operations_are_one_label() {
        // No recorder installed: recording is a no-op and must not panic.
        kms_request("Encrypt", "ok", Duration::from_millis(1));
        kms_request("Evil\nName", "ok", Duration::from_millis(1));
    }
}
