//! A load generator for any AWS KMS JSON API endpoint (keyvol, moto, ...):
//! N concurrent clients, each with its own keep-alive connection and
//! signing every request with SigV4, call one operation back to back for T
//! seconds; prints one JSON line with requests per second, p50/p99 latency
//! and the CPU time per answered request of this process (`client_cpu_us`)
//! and, with `--server-pid`, of the server (`server_cpu_us`).
//!
//! Two drivers: `--driver events` (the default) runs every client's
//! connection on one thread (a tokio current-thread runtime with hyper's
//! HTTP/1.1 client), as load generators such as wrk do; `--driver threads`
//! gives each client a thread and a blocking [`RemoteKms`]. On a machine
//! whose cores the server shares, the load generator's own CPU time is
//! taken from the server: 64 blocking threads spend about 40 µs per call,
//! mostly in context switches, the event loop a fraction of that.
//!
//! ```text
//! cargo run --release --example kms_load -- --endpoint http://127.0.0.1:8090 \
//!     --access-key-id AKIA... --secret-access-key ... \
//!     --operation Encrypt --clients 16 --seconds 5 [--key-id KEY] [--driver threads]
//! ```
//! Without `--key-id` a key is created first (CreateKey).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use base64::Engine;
use clap::{value_parser, Arg, Command};
use keyvol::ids::Region;
use keyvol::secret::SecretBytes;
use keyvol::server::client::signed_kms_headers;
use keyvol::server::RemoteKms;
use serde_json::{json, Value};

fn args() -> Command {
    Command::new("kms_load")
        .about("Concurrent load on an AWS KMS JSON API endpoint")
        .arg(Arg::new("endpoint").long("endpoint").required(true))
        .arg(
            Arg::new("access-key-id")
                .long("access-key-id")
                .default_value("AKIAIOSFODNN7EXAMPLE"),
        )
        .arg(
            Arg::new("secret-access-key")
                .long("secret-access-key")
                .default_value("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
        )
        .arg(Arg::new("region").long("region").default_value("us-east-1"))
        .arg(
            Arg::new("operation")
                .long("operation")
                .default_value("Encrypt")
                .value_parser(["Encrypt", "GenerateDataKey", "Decrypt"]),
        )
        .arg(Arg::new("key-id").long("key-id"))
        .arg(
            Arg::new("clients")
                .long("clients")
                .default_value("1")
                .value_parser(value_parser!(u32).range(1..=4096)),
        )
        .arg(
            Arg::new("seconds")
                .long("seconds")
                .default_value("5")
                .value_parser(value_parser!(f64)),
        )
        .arg(
            Arg::new("plaintext-bytes")
                .long("plaintext-bytes")
                .default_value("64")
                .value_parser(value_parser!(u32).range(1..=4096)),
        )
        .arg(Arg::new("label").long("label").default_value(""))
        .arg(
            Arg::new("driver")
                .long("driver")
                .default_value("events")
                .value_parser(["events", "threads"])
                .help("one event-loop thread for all clients, or a thread per client"),
        )
        .arg(
            Arg::new("server-pid")
                .long("server-pid")
                .help("also report the CPU time this process (the server) spent per request")
                .value_parser(value_parser!(u32)),
        )
}

/// CPU seconds (user + system) of process `pid` so far, from /proc.
fn process_cpu(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses and may
    // hold spaces: utime and stime are fields 14 and 15 of the line.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| ticks / hz as f64)
}

/// CPU seconds (user + system) of this process so far.
fn own_cpu() -> f64 {
    // SAFETY: getrusage writes only into the zeroed struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return f64::NAN;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(u.ru_utime) + secs(u.ru_stime)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("kms_load: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let m = args().get_matches();
    let s = |n: &str| m.get_one::<String>(n).cloned().unwrap_or_default();
    let endpoint = s("endpoint");
    let region: Region = s("region").parse().map_err(|e| format!("--region: {e}"))?;
    let secret = s("secret-access-key");
    let akid = s("access-key-id");
    let operation = s("operation");
    let clients = *m.get_one::<u32>("clients").unwrap_or(&1) as usize;
    let seconds = *m.get_one::<f64>("seconds").unwrap_or(&5.0);
    if !(seconds > 0.0 && seconds <= 3600.0) {
        return Err("--seconds must be in (0, 3600]".into());
    }
    let pt_len = *m.get_one::<u32>("plaintext-bytes").unwrap_or(&64) as usize;
    let new_client = || {
        RemoteKms::new(
            &endpoint,
            region.clone(),
            &akid,
            SecretBytes::from_slice(secret.as_bytes()),
        )
        .map_err(|e| e.to_string())
    };

    let setup = new_client()?;
    let key_id = match m.get_one::<String>("key-id") {
        Some(k) => k.clone(),
        None => setup
            .call("CreateKey", json!({"Description": "kms_load"}))
            .map_err(|e| format!("CreateKey: {e}"))?["KeyMetadata"]["KeyId"]
            .as_str()
            .ok_or("CreateKey returned no KeyId")?
            .to_string(),
    };
    let plaintext = base64::engine::general_purpose::STANDARD.encode(vec![0x5au8; pt_len]);
    let request = match operation.as_str() {
        "Encrypt" => json!({"KeyId": key_id, "Plaintext": plaintext}),
        "GenerateDataKey" => json!({"KeyId": key_id, "KeySpec": "AES_256"}),
        _ => {
            let ct = setup
                .call("Encrypt", json!({"KeyId": key_id, "Plaintext": plaintext}))
                .map_err(|e| format!("Encrypt: {e}"))?;
            json!({"CiphertextBlob": ct["CiphertextBlob"]})
        }
    };
    // One call to fail fast on a wrong key or credentials.
    setup
        .call(&operation, request.clone())
        .map_err(|e| format!("{operation}: {e}"))?;

    let stop = Arc::new(AtomicBool::new(false));
    let load = Load {
        endpoint: endpoint.clone(),
        region: region.clone(),
        access_key_id: akid.clone(),
        secret_access_key: secret.clone(),
        operation: operation.clone(),
        request: request.clone(),
    };
    // The drivers' threads wait at `start` with this one, so that the
    // clock and the CPU counters start when every client is ready.
    let (start, workers) = if s("driver") == "threads" {
        let start = Arc::new(Barrier::new(clients + 1));
        let mut threads = Vec::with_capacity(clients);
        for _ in 0..clients {
            threads.push(spawn_blocking_client(new_client()?, &load, &stop, &start)?);
        }
        (start, threads)
    } else {
        let start = Arc::new(Barrier::new(2));
        (
            start.clone(),
            vec![spawn_event_loop(load, clients, &stop, &start)?],
        )
    };
    let server_pid = m.get_one::<u32>("server-pid").copied();
    start.wait();
    let began = Instant::now();
    let (server0, own0) = (server_pid.and_then(process_cpu), own_cpu());
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    let (server1, own1) = (server_pid.and_then(process_cpu), own_cpu());
    let mut all = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for t in workers {
        for Outcome {
            latencies,
            errors: e,
            first_error: fe,
        } in t.join().map_err(|_| "a client thread panicked")??
        {
            all.extend(latencies);
            errors += e;
            first_error = first_error.or(fe);
        }
    }
    let elapsed = began.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return f64::NAN;
        }
        let i = ((all.len() as f64 * p).ceil() as usize).clamp(1, all.len()) - 1;
        all[i].as_secs_f64() * 1e3
    };
    let out: Value = json!({
        "label": s("label"),
        "operation": operation,
        "clients": clients,
        "seconds": (elapsed * 100.0).round() / 100.0,
        "requests": all.len(),
        "errors": errors,
        "first_error": first_error,
        "rps": (all.len() as f64 / elapsed * 10.0).round() / 10.0,
        "p50_ms": (pct(0.50) * 1000.0).round() / 1000.0,
        "p99_ms": (pct(0.99) * 1000.0).round() / 1000.0,
    });
    // CPU per answered request while the clients ran (the last calls
    // in flight at the stop are not counted, nor their CPU after it).
    let per_request = |cpu: f64| {
        let us = cpu / all.len().max(1) as f64 * 1e6;
        us.is_finite().then(|| (us * 10.0).round() / 10.0)
    };
    let mut out = out;
    out["client_cpu_us"] = json!(per_request(own1 - own0));
    if let (Some(a), Some(b)) = (server0, server1) {
        out["server_cpu_us"] = json!(per_request(b - a));
    }
    println!("{out}");
    Ok(())
}

/// What every client sends, and where.
#[derive(Clone)]
struct Load {
    endpoint: String,
    region: Region,
    access_key_id: String,
    secret_access_key: String,
    operation: String,
    request: Value,
}

/// One client's answered calls (their latencies) and failures.
#[derive(Default)]
struct Outcome {
    latencies: Vec<Duration>,
    errors: u64,
    first_error: Option<String>,
}

impl Outcome {
    fn failed(&mut self, e: impl std::fmt::Display) {
        self.errors += 1;
        self.first_error.get_or_insert_with(|| e.to_string());
    }
}

type Worker = std::thread::JoinHandle<Result<Vec<Outcome>, String>>;

/// A thread with a blocking [`RemoteKms`], calling until `stop`.
fn spawn_blocking_client(
    client: RemoteKms,
    load: &Load,
    stop: &Arc<AtomicBool>,
    start: &Arc<Barrier>,
) -> Result<Worker, String> {
    let (stop, start, request, operation) = (
        stop.clone(),
        start.clone(),
        load.request.clone(),
        load.operation.clone(),
    );
    std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(move || {
            let mut out = Outcome {
                latencies: Vec::with_capacity(4096),
                ..Outcome::default()
            };
            start.wait();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                match client.call(&operation, request.clone()) {
                    Ok(_) => out.latencies.push(t.elapsed()),
                    Err(e) => out.failed(e),
                }
            }
            Ok(vec![out])
        })
        .map_err(|e| format!("cannot start a client thread: {e}"))
}

/// One thread running `clients` connections on a current-thread runtime.
fn spawn_event_loop(
    load: Load,
    clients: usize,
    stop: &Arc<AtomicBool>,
    start: &Arc<Barrier>,
) -> Result<Worker, String> {
    let (stop, start) = (stop.clone(), start.clone());
    std::thread::Builder::new()
        .name("kms-load".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot build the client runtime: {e}"))?;
            let load = Arc::new(load);
            rt.block_on(async move {
                let tasks: Vec<_> = (0..clients)
                    .map(|_| tokio::spawn(event_client(load.clone(), stop.clone())))
                    .collect();
                // The clients start once this thread's caller is ready too;
                // until then they are parked on the runtime's one thread.
                start.wait();
                let mut outcomes = Vec::with_capacity(clients);
                for t in tasks {
                    outcomes.push(t.await.map_err(|e| format!("a client task failed: {e}"))?);
                }
                Ok(outcomes)
            })
        })
        .map_err(|e| format!("cannot start the client thread: {e}"))
}

type Sender = hyper::client::conn::http1::SendRequest<http_body_util::Full<hyper::body::Bytes>>;

/// A keep-alive HTTP/1.1 connection to `authority` (`host:port`).
async fn connect(authority: &str) -> Result<Sender, String> {
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake with {authority}: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One client of the event loop: signs and sends `load`'s request back to
/// back until `stop`, reconnecting when the server closes the connection
/// (moto answers HTTP/1.0-style, one request per connection).
async fn event_client(load: Arc<Load>, stop: Arc<AtomicBool>) -> Outcome {
    let mut out = Outcome {
        latencies: Vec::with_capacity(4096),
        ..Outcome::default()
    };
    let Some(authority) = load
        .endpoint
        .strip_prefix("http://")
        .map(|a| a.trim_end_matches('/').to_string())
    else {
        out.failed("--driver events takes an http:// endpoint");
        return out;
    };
    let body = match serde_json::to_vec(&load.request) {
        Ok(b) => hyper::body::Bytes::from(b),
        Err(e) => {
            out.failed(e);
            return out;
        }
    };
    let secret = SecretBytes::from_slice(load.secret_access_key.as_bytes());
    let mut sender: Option<Sender> = None;
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        let s = match sender.as_mut().filter(|s| !s.is_closed()) {
            Some(s) => s,
            None => match connect(&authority).await {
                Ok(s) => sender.insert(s),
                Err(e) => {
                    out.failed(e);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        if s.ready().await.is_err() {
            sender = None;
            continue;
        }
        let signed = signed_kms_headers(
            &authority,
            &load.region,
            &load.access_key_id,
            &secret,
            &load.operation,
            &body,
        );
        let headers = match signed {
            Ok(h) => h,
            Err(e) => {
                out.failed(e);
                return out;
            }
        };
        let mut builder = hyper::Request::builder().method("POST").uri("/");
        for (name, value) in &headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let req = match builder.body(http_body_util::Full::new(body.clone())) {
            Ok(r) => r,
            Err(e) => {
                out.failed(e);
                return out;
            }
        };
        let resp = match s.send_request(req).await {
            Ok(r) => r,
            Err(e) => {
                out.failed(e);
                sender = None;
                continue;
            }
        };
        let status = resp.status();
        let answer = http_body_util::BodyExt::collect(resp.into_body()).await;
        match answer {
            Ok(b) if status == 200 => {
                let _ = b.to_bytes();
                out.latencies.push(t.elapsed());
            }
            Ok(b) => {
                let b = b.to_bytes();
                let snippet: String = String::from_utf8_lossy(&b).chars().take(200).collect();
                out.failed(format!("HTTP {status}: {snippet}"));
            }
            Err(e) => {
                out.failed(e);
                sender = None;
            }
        }
    }
    out
}
