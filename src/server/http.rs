//! The HTTP/1.1 server of the KMS API (tokio + hyper): connection limits,
//! slow-client timeouts, body limits, request decoding, graceful shutdown.
//!
//! A request goes: size check, body read (bounded in size and time),
//! [`decode_request`] (method, path, SigV4, target, JSON), then the call:
//! a cheap stateless one ([`KmsService::batches`]) queued for the batch
//! thread, which runs the calls queued together one after the other and
//! answers them after one commit ([`KmsService::call_batch`]); any other
//! with [`KmsService::call`] on the blocking pool, since the KMS does
//! SQLite I/O.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::Value;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch, Semaphore};

use super::errors::{error_body, http_status};
use super::sigv4::{self, HttpRequest, VerifyPolicy};
use super::sts;
use super::tls::TlsIdentity;
use super::{KmsService, CONTENT_TYPE as JSON_1_1, TARGET_PREFIX};
use crate::ids::Region;
use crate::kms::{ErrorCode, KmsError, RequestContext};

/// The server's clock, injectable for tests of the SigV4 time window.
pub type Clock = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

/// Limits and timeouts of the server.
#[derive(Clone)]
pub struct ServeOptions {
    /// Largest accepted request body; larger is HTTP 413.
    pub max_body_bytes: usize,
    /// Time a client has to send a complete request head. It also bounds
    /// how long a kept-alive connection may sit idle between requests.
    pub header_read_timeout: Duration,
    /// Time a client has to send the request body once the head is in.
    pub body_read_timeout: Duration,
    /// Open connections at most; more wait in the listen backlog.
    pub max_connections: usize,
    /// Threads of the blocking pool that runs KMS operations.
    pub max_blocking_threads: usize,
    /// Regions served; empty serves any region a request is signed for.
    pub regions: Vec<Region>,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
    /// Serve HTTPS with this identity instead of plain HTTP.
    pub tls: Option<TlsIdentity>,
    pub clock: Clock,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_body_bytes: 1 << 20,
            header_read_timeout: Duration::from_secs(20),
            body_read_timeout: Duration::from_secs(20),
            max_connections: 512,
            max_blocking_threads: 32,
            regions: Vec::new(),
            shutdown_grace: Duration::from_secs(30),
            tls: None,
            clock: Arc::new(OffsetDateTime::now_utc),
        }
    }
}

impl fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServeOptions")
            .field("max_body_bytes", &self.max_body_bytes)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("body_read_timeout", &self.body_read_timeout)
            .field("max_connections", &self.max_connections)
            .field("max_blocking_threads", &self.max_blocking_threads)
            .field("regions", &self.regions)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// A request refused before it reached the KMS: the HTTP status and the
/// AWS error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub error: KmsError,
    /// The EC2 error of an EC2 action, sent as is.
    pub ec2: Option<crate::api_error::ApiError>,
}

impl From<KmsError> for Rejection {
    fn from(error: KmsError) -> Self {
        Rejection {
            status: http_status(&error),
            error,
            ec2: None,
        }
    }
}

impl Rejection {
    fn ec2(e: crate::api_error::ApiError) -> Self {
        Rejection {
            status: crate::ec2::xml::status(&e),
            error: KmsError::new(ErrorCode::ValidationException, e.message.clone()),
            ec2: Some(e),
        }
    }
}

fn reject(status: u16, code: ErrorCode, message: impl Into<String>) -> Rejection {
    Rejection {
        status,
        error: KmsError::new(code, message),
        ec2: None,
    }
}

/// An authenticated, decoded KMS request.
#[derive(Debug)]
pub struct Decoded {
    pub ctx: RequestContext,
    pub operation: String,
    pub body: Value,
}

/// Everything the server does with a request short of running it: method
/// and path, body size, SigV4, `X-Amz-Target`, content type and JSON.
/// Pure apart from `service.credentials`; never panics on any input.
pub fn decode_request(
    req: &HttpRequest<'_>,
    peer: Option<SocketAddr>,
    service: &dyn KmsService,
    policy: &VerifyPolicy<'_>,
    max_body_bytes: usize,
) -> Result<Decoded, Rejection> {
    if req.method != "POST" {
        return Err(reject(
            405,
            ErrorCode::UnknownOperationException,
            format!(
                "The KMS API accepts only POST / with X-Amz-Target: TrentService.<Operation>; got method {}.",
                truncate(req.method, 16)
            ),
        ));
    }
    if req.path != "/" {
        return Err(reject(
            404,
            ErrorCode::UnknownOperationException,
            format!(
                "The KMS API is served at path '/', not '{}'.",
                truncate(req.path, 128)
            ),
        ));
    }
    if req.body.len() > max_body_bytes {
        return Err(too_large(max_body_bytes));
    }
    let verified = sigv4::verify(req, policy, |id| service.credentials(id))?;

    let Some(target) = req.header("x-amz-target") else {
        return Err(KmsError::new(
            ErrorCode::UnknownOperationException,
            "Missing X-Amz-Target header: expected TrentService.<Operation>, e.g. TrentService.Encrypt.",
        )
        .into());
    };
    let operation = match target.trim().strip_prefix(TARGET_PREFIX) {
        Some(op)
            if !op.is_empty() && op.len() <= 64 && op.bytes().all(|b| b.is_ascii_alphanumeric()) =>
        {
            op.to_string()
        }
        _ => {
            return Err(KmsError::new(
                ErrorCode::UnknownOperationException,
                format!(
                    "Unknown X-Amz-Target '{}': expected TrentService.<Operation>, e.g. TrentService.Encrypt.",
                    truncate(target, 96)
                ),
            )
            .into())
        }
    };
    if let Some(ct) = req.header("content-type") {
        let media = ct.split(';').next().unwrap_or("").trim();
        let ok = [
            "application/x-amz-json-1.1",
            "application/x-amz-json-1.0",
            "application/json",
        ]
        .iter()
        .any(|m| media.eq_ignore_ascii_case(m));
        if !ok {
            return Err(KmsError::new(
                ErrorCode::SerializationException,
                format!(
                    "Content-Type '{}' is not supported: send {JSON_1_1}.",
                    truncate(ct, 96)
                ),
            )
            .into());
        }
    }
    let body = if req.body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Default::default())
    } else {
        match serde_json::from_slice::<Value>(req.body) {
            Ok(v @ Value::Object(_)) => v,
            Ok(other) => {
                return Err(KmsError::new(
                    ErrorCode::SerializationException,
                    format!(
                        "The request body must be a JSON object, not {}.",
                        json_kind(&other)
                    ),
                )
                .into())
            }
            Err(e) => {
                return Err(KmsError::new(
                    ErrorCode::SerializationException,
                    format!("The request body is not valid JSON: {e}."),
                )
                .into())
            }
        }
    };

    // The retired keyvol header that once claimed `kms:ViaService`: only
    // the control plane's own KMS calls act via EC2, so a request that
    // still carries it is refused rather than silently run without it.
    let name = super::RETIRED_VIA_SERVICE_HEADER;
    if req.header(name).is_some() {
        return Err(KmsError::validation(format!(
            "The {name} header is no longer accepted: no caller can claim kms:ViaService. Volume hosts attach volumes with AttachVolume and obtain data keys with {}; drop the header.",
            super::control_plane::RELEASE_VOLUME_KEY
        ))
        .into());
    }
    let mut caller = verified.credentials.caller;
    caller.access_key_id = Some(verified.access_key_id);
    let mut ctx = RequestContext::new(caller, verified.region);
    ctx.source_ip = peer.map(|p| p.ip().to_string());
    ctx.user_agent = req.header("user-agent").map(|ua| truncate(ua, 256));
    Ok(Decoded {
        ctx,
        operation,
        body,
    })
}

/// A server running on its own runtime thread; see [`start`].
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl ServerHandle {
    /// The address the server listens on (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets in-flight requests finish (up to the grace
    /// period) and waits for the server thread.
    pub fn shutdown(mut self) -> io::Result<()> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> io::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the KMS server thread panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

/// Binds `listen` and serves on a new runtime in a background thread until
/// [`ServerHandle::shutdown`] (or drop). For tests and embedding; the CLI
/// uses [`run`].
pub fn start(
    service: Arc<dyn KmsService>,
    listen: SocketAddr,
    opts: ServeOptions,
) -> io::Result<ServerHandle> {
    let rt = runtime(&opts)?;
    let listener = rt.block_on(async { bind(listen) })?;
    let local_addr = listener.local_addr()?;
    let (tx, rx) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("kms-http".into())
        .spawn(move || {
            rt.block_on(serve_listener(service, listener, opts, async {
                let _ = rx.await;
            }))
        })?;
    Ok(ServerHandle {
        local_addr,
        stop: Some(tx),
        thread: Some(thread),
    })
}

/// Serves on `listen` until SIGTERM or SIGINT, then shuts down gracefully.
/// Blocking: builds its own runtime (the `keyvol kms serve` entry point).
/// `on_ready` gets the bound address (the port, when `listen` asks for port
/// 0) once the signal handlers are in place, e.g. to print it.
pub fn run(
    service: Arc<dyn KmsService>,
    listen: SocketAddr,
    opts: ServeOptions,
    on_ready: impl FnOnce(SocketAddr),
) -> io::Result<()> {
    runtime(&opts)?.block_on(serve_until_signal(service, listen, opts, on_ready))
}

/// Serves on `listen` until SIGTERM or SIGINT, then shuts down gracefully.
pub async fn serve(
    service: Arc<dyn KmsService>,
    listen: SocketAddr,
    opts: ServeOptions,
) -> io::Result<()> {
    serve_until_signal(service, listen, opts, |_| {}).await
}

/// The signal handlers are installed before the socket is bound, so a
/// signal sent once the port answers is never lost.
async fn serve_until_signal(
    service: Arc<dyn KmsService>,
    listen: SocketAddr,
    opts: ServeOptions,
    on_ready: impl FnOnce(SocketAddr),
) -> io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let listener = bind(listen)?;
    on_ready(listener.local_addr()?);
    let stop = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    serve_listener(service, listener, opts, stop).await
}

/// Serves on `listener` until `shutdown` completes, then stops accepting
/// and waits (up to `opts.shutdown_grace`) for open requests to finish.
pub async fn serve_listener(
    service: Arc<dyn KmsService>,
    listener: TcpListener,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let max_conns = opts
        .max_connections
        .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    let slots = Arc::new(Semaphore::new(max_conns));
    let (stop_tx, stop_rx) = watch::channel(false);
    let kms_slots = tokio::sync::Semaphore::new(kms_concurrency());
    let batcher = Batcher::start(&service)?;
    let state = Arc::new(State {
        service,
        opts,
        kms_slots,
        batcher,
    });
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break, // the semaphore is never closed
            },
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(_) => {
                    // Out of file descriptors or a connection reset before
                    // accept: back off briefly rather than spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let stop_rx = stop_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match state.opts.tls.as_ref().map(|t| t.acceptor()) {
                None => serve_connection(state, peer, stream, stop_rx).await,
                Some(acceptor) => {
                    // The handshake is bounded like a request head.
                    let limit = state.opts.header_read_timeout;
                    if let Ok(Ok(tls)) = tokio::time::timeout(limit, acceptor.accept(stream)).await
                    {
                        serve_connection(state, peer, tls, stop_rx).await;
                    }
                }
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a slot: when all are back, all are done.
    let grace = state.opts.shutdown_grace + Duration::from_secs(1);
    let _ = tokio::time::timeout(grace, slots.acquire_many(max_conns as u32)).await;
    Ok(())
}

/// Serves HTTP/1.1 on one connection until the client leaves, a timeout
/// closes it, or shutdown drains it.
async fn serve_connection<I>(
    state: Arc<State>,
    peer: SocketAddr,
    io: I,
    mut stop_rx: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let handler_state = state.clone();
    let svc = service_fn(move |req| handle(handler_state.clone(), peer, req));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(state.opts.header_read_timeout)
        .keep_alive(true)
        .max_headers(64);
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let stopping = tokio::select! {
        _ = conn.as_mut() => false,
        r = stop_rx.wait_for(|stop| *stop) => r.is_ok(),
    };
    if stopping {
        conn.as_mut().graceful_shutdown();
        let _ = tokio::time::timeout(state.opts.shutdown_grace, conn.as_mut()).await;
    }
}

struct State {
    service: Arc<dyn KmsService>,
    opts: ServeOptions,
    /// KMS operations running at once. A state-changing one holds the write
    /// connection throughout, but a cryptographic one only reads and then
    /// waits, off the CPU, for the group commit of its audit record: the
    /// more of them wait, the more records one commit carries. Beyond that
    /// each extra thread only adds futex handoffs and context switches
    /// (measured on 2 cores, Encrypt/GenerateDataKey at 16 and 64 clients:
    /// 2 slots 1,315-1,933 req/s, 8 slots 1,646-2,498, 16 slots
    /// 2,408-2,984, on a loaded machine).
    kms_slots: tokio::sync::Semaphore,
    /// The queue of cheap stateless calls.
    batcher: Batcher,
}

/// The most calls one batch runs before its commit.
const BATCH_CALLS: usize = 128;

/// The thread that runs the cheap stateless calls (Encrypt, Decrypt,
/// GenerateDataKey, DescribeKey, ...: [`KmsService::batches`]) in batches:
/// it takes every call queued when it starts a batch (up to
/// [`BATCH_CALLS`]), runs them one after the other and answers them after
/// one commit. A call of its own on the blocking pool would cost a thread
/// wake-up, a handover of the write connection between threads and a
/// commit wait each; queued, the calls that arrive while a batch runs make
/// up the next one. One thread: two contend for the write connection as
/// the blocking pool's threads did (on 2 cores, Encrypt at 16 and 64
/// clients: one thread 16,826-20,282 req/s, two 15,567-16,888).
struct Batcher {
    queue: std::sync::mpsc::Sender<Queued>,
}

struct Queued {
    call: crate::kms::batch::Call,
    reply: oneshot::Sender<Result<Value, KmsError>>,
}

impl Batcher {
    /// Starts the batch thread; it ends once the sender is dropped.
    fn start(service: &Arc<dyn KmsService>) -> io::Result<Self> {
        let (queue, calls) = std::sync::mpsc::channel::<Queued>();
        let service = service.clone();
        std::thread::Builder::new()
            .name("kms-batch".into())
            .spawn(move || Self::run(&*service, &calls))?;
        Ok(Batcher { queue })
    }

    fn run(service: &dyn KmsService, calls: &std::sync::mpsc::Receiver<Queued>) {
        while let Ok(first) = calls.recv() {
            let (batch, replies): (Vec<_>, Vec<_>) = std::iter::once(first)
                .chain(calls.try_iter().take(BATCH_CALLS - 1))
                .map(|q| (q.call, q.reply))
                .unzip();
            for (reply, result) in replies.into_iter().zip(service.call_batch(batch)) {
                // A client that went away takes no answer.
                let _ = reply.send(result);
            }
        }
    }

    /// Queues a call and waits for its outcome.
    async fn call(&self, call: crate::kms::batch::Call) -> Result<Value, KmsError> {
        let operation = call.operation.clone();
        let (reply, answer) = oneshot::channel();
        let lost = || KmsError::internal(format!("the KMS failed while running {operation}"));
        if self.queue.send(Queued { call, reply }).is_err() {
            return Err(lost());
        }
        answer.await.unwrap_or_else(|_| Err(lost()))
    }
}

/// Eight KMS operations per core, at least sixteen.
fn kms_concurrency() -> usize {
    std::thread::available_parallelism()
        .map_or(2, std::num::NonZeroUsize::get)
        .saturating_mul(8)
        .max(16)
}

/// The API a request is for: the service of its SigV4 credential scope
/// (`sts`), the KMS otherwise (also for unsigned requests, which the KMS
/// path refuses with its own error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Kms,
    Sts,
    Ec2,
    Ebs,
}

fn api_of(headers: &hyper::HeaderMap) -> Api {
    let service = headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| sigv4::parse_authorization(v).ok())
        .map(|a| a.service);
    match service.as_deref() {
        Some(sts::STS_SERVICE) => Api::Sts,
        Some(crate::ec2::EC2_SERVICE) => Api::Ec2,
        Some(crate::ebs::EBS_SERVICE) => Api::Ebs,
        _ => Api::Kms,
    }
}

/// A response body and its content type.
enum Reply {
    Json(Value),
    Xml(String),
    /// An EBS direct API answer: its own status, headers and body.
    Ebs(crate::ebs::Response),
}

async fn handle(
    state: Arc<State>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let request_id = uuid::Uuid::new_v4().to_string();
    let api = api_of(req.headers());
    let started = std::time::Instant::now();
    let mut operation = String::new();
    let (mut close, result) =
        match process(&state, peer, req, api, &request_id, &mut operation).await {
            Ok(v) => (false, Ok(v)),
            Err((close, r)) => (close, Err(r)),
        };
    let outcome = match &result {
        Ok(_) => "ok".to_string(),
        Err(r) => r.error.code.to_string(),
    };
    crate::telemetry::kms_request(&operation, &outcome, started.elapsed());
    let (status, reply) = match (api, result) {
        (_, Ok(Reply::Ebs(r))) => (r.status, Reply::Ebs(r)),
        (_, Ok(v)) => (200, v),
        (Api::Kms, Err(r)) => (r.status, Reply::Json(error_body(&r.error))),
        (Api::Sts, Err(r)) => {
            // The transport's errors (signatures, sizes) by STS's names.
            let e = crate::iam::IamError::from(r.error.clone());
            let status = if r.status == 413 {
                413
            } else {
                sts::http_status(&e)
            };
            (status, Reply::Xml(sts::error_body(&e, &request_id)))
        }
        (Api::Ebs, Err(r)) => {
            let e = ebs_error(&r);
            (e.status(), Reply::Ebs(crate::ebs::Response::error(&e)))
        }
        (Api::Ec2, Err(r)) => {
            let e = ec2_error(&r);
            (
                crate::ec2::xml::status(&e),
                Reply::Xml(crate::ec2::xml::error(&e, &request_id)),
            )
        }
    };
    let mut extra: Vec<(&'static str, String)> = Vec::new();
    let (content_type, bytes) = match reply {
        Reply::Xml(x) => (sts::XML_CONTENT_TYPE, x.into_bytes()),
        Reply::Ebs(r) => {
            extra = r.headers;
            match r.body {
                crate::ebs::Body::Json(v) => (
                    "application/json",
                    serde_json::to_vec(&v).unwrap_or_default(),
                ),
                crate::ebs::Body::Empty => ("application/json", Vec::new()),
                crate::ebs::Body::Block(b) => ("application/octet-stream", b),
            }
        }
        Reply::Json(v) => match serde_json::to_vec(&v) {
            Ok(b) => (JSON_1_1, b),
            Err(_) => {
                close = true;
                (JSON_1_1, br#"{"__type":"KMSInternalException","message":"the response could not be serialized"}"#
                    .to_vec())
            }
        },
    };
    let mut resp = Response::new(Full::new(Bytes::from(bytes)));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        h.insert("x-amzn-RequestId", v);
    }
    for (name, value) in extra {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    if close {
        h.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    if status == 405 {
        h.insert(ALLOW, HeaderValue::from_static("POST"));
    }
    Ok(resp)
}

/// Reads, decodes and runs one request. An error carries whether the
/// connection must close (the body was not read to its end).
async fn process(
    state: &State,
    peer: SocketAddr,
    req: Request<Incoming>,
    api: Api,
    request_id: &str,
    operation_seen: &mut String,
) -> Result<Reply, (bool, Rejection)> {
    let opts = &state.opts;
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > opts.max_body_bytes as u64) {
        return Err((true, too_large(opts.max_body_bytes)));
    }
    let (parts, body) = req.into_parts();
    let collected = tokio::time::timeout(
        opts.body_read_timeout,
        Limited::new(body, opts.max_body_bytes).collect(),
    )
    .await;
    let body = match collected {
        Ok(Ok(c)) => c.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return Err((true, too_large(opts.max_body_bytes)))
        }
        Ok(Err(e)) => {
            return Err((
                true,
                reject(
                    400,
                    ErrorCode::SerializationException,
                    format!("The request body could not be read: {e}."),
                ),
            ))
        }
        Err(_) => {
            return Err((
                true,
                reject(
                    400,
                    ErrorCode::SerializationException,
                    format!(
                        "The request body did not arrive within {} s.",
                        opts.body_read_timeout.as_secs()
                    ),
                ),
            ))
        }
    };
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let http_req = HttpRequest {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers: &headers,
        body: &body,
    };
    if api == Api::Ec2 {
        return answer_ec2(state, peer, &http_req, request_id, operation_seen)
            .await
            .map(Reply::Xml)
            .map_err(|e| (false, e));
    }
    if api == Api::Ebs {
        return answer_ebs(
            state,
            peer,
            &http_req,
            body.clone(),
            request_id,
            operation_seen,
        )
        .await
        .map(Reply::Ebs)
        .map_err(|e| (false, e));
    }
    if api == Api::Sts {
        operation_seen.push_str("sts");
        return answer_sts(state, Some(peer), &http_req, request_id)
            .await
            .map(Reply::Xml)
            .map_err(|e| (false, e));
    }
    let policy = VerifyPolicy {
        service: sigv4::KMS_SERVICE,
        regions: &opts.regions,
        now: (opts.clock)(),
    };
    let mut decoded = decode_request(
        &http_req,
        Some(peer),
        state.service.as_ref(),
        &policy,
        opts.max_body_bytes,
    )
    .map_err(|r| (false, r))?;
    decoded.ctx.request_id = Some(request_id.to_string());

    let service = state.service.clone();
    let operation = decoded.operation.clone();
    operation_seen.clone_from(&operation);
    if service.batches(&operation, &decoded.body) {
        let call = crate::kms::batch::Call {
            ctx: decoded.ctx,
            operation: decoded.operation,
            request: decoded.body,
        };
        return match state.batcher.call(call).await {
            Ok(v) => Ok(Reply::Json(v)),
            Err(e) => Err((false, e.into())),
        };
    }
    // The semaphore is never closed, so acquire cannot fail.
    let _slot = state.kms_slots.acquire().await.ok();
    let result = tokio::task::spawn_blocking(move || {
        service.call(&decoded.ctx, &decoded.operation, decoded.body)
    })
    .await;
    match result {
        Ok(Ok(v)) => Ok(Reply::Json(v)),
        Ok(Err(e)) => Err((false, e.into())),
        Err(_) => Err((
            false,
            KmsError::internal(format!("the KMS failed while running {operation}")).into(),
        )),
    }
}

/// An STS request: POST (or GET) with Query-protocol parameters, signed
/// for the service `sts`.
async fn answer_sts(
    state: &State,
    peer: Option<SocketAddr>,
    req: &HttpRequest<'_>,
    request_id: &str,
) -> Result<String, Rejection> {
    if req.method != "POST" && req.method != "GET" {
        return Err(reject(
            405,
            ErrorCode::UnknownOperationException,
            "STS accepts POST / (or GET) with Action=GetCallerIdentity or Action=AssumeRole.",
        ));
    }
    let policy = VerifyPolicy {
        service: sts::STS_SERVICE,
        regions: &state.opts.regions,
        now: (state.opts.clock)(),
    };
    let verified = sigv4::verify(req, &policy, |id| state.service.credentials(id))?;
    let params = sts::query_params(req.body, req.query);
    let caller = verified.credentials.caller;
    let service = state.service.clone();
    let request_id = request_id.to_string();
    let mut ctx = RequestContext::new(caller, verified.region);
    ctx.source_ip = peer.map(|p| p.ip().to_string());
    ctx.request_id = Some(request_id.clone());
    tokio::task::spawn_blocking(move || sts::answer(&params, &ctx, &*service, &request_id))
        .await
        .map_err(|_| Rejection::from(KmsError::internal("STS failed while answering")))?
        .map_err(|e| Rejection::from(KmsError::from(e)))
}

/// An EC2 request: POST with Query-protocol parameters, signed for the
/// service `ec2`; the answer is the action's XML response.
async fn answer_ec2(
    state: &State,
    peer: SocketAddr,
    req: &HttpRequest<'_>,
    request_id: &str,
    operation_seen: &mut String,
) -> Result<String, Rejection> {
    if req.method != "POST" && req.method != "GET" {
        return Err(reject(
            405,
            ErrorCode::UnknownOperationException,
            "EC2 accepts POST / with Query-protocol parameters.",
        ));
    }
    let policy = VerifyPolicy {
        service: crate::ec2::EC2_SERVICE,
        regions: &state.opts.regions,
        now: (state.opts.clock)(),
    };
    let verified = sigv4::verify(req, &policy, |id| state.service.credentials(id))?;
    let params = sts::query_params(req.body, req.query);
    let action = params
        .iter()
        .find(|(k, _)| k == "Action")
        .map(|(_, v)| truncate(v, 64))
        .unwrap_or_default();
    operation_seen.push_str(&format!("ec2:{action}"));
    let mut ctx = RequestContext::new(verified.credentials.caller, verified.region);
    ctx.source_ip = Some(peer.ip().to_string());
    ctx.user_agent = req.header("user-agent").map(|ua| truncate(ua, 256));
    ctx.request_id = Some(request_id.to_string());
    let service = state.service.clone();
    let request_id = request_id.to_string();
    if action == super::control_plane::RELEASE_VOLUME_KEY {
        // A data key travels only inside TLS, or never leaves the machine.
        let secure = state.opts.tls.is_some() || peer.ip().to_canonical().is_loopback();
        return tokio::task::spawn_blocking(move || {
            service
                .release_volume_key(&ctx, params, secure)
                .map(|k| crate::ec2::hosts::release_response(&k, &request_id))
        })
        .await
        .map_err(|_| Rejection::from(KmsError::internal("EC2 failed while answering")))?
        // The response is handed to hyper as it is (like a KMS Decrypt's
        // plaintext); every copy keyvol makes before is zeroized.
        .map(|xml| xml.as_str().to_string())
        .map_err(Rejection::ec2);
    }
    tokio::task::spawn_blocking(move || {
        service
            .ec2(&ctx, params)
            .map(|v| crate::ec2::xml::response(&action, &v, &request_id))
    })
    .await
    .map_err(|_| Rejection::from(KmsError::internal("EC2 failed while answering")))?
    .map_err(Rejection::ec2)
}

/// An EBS direct API request: REST-JSON, signed for the service `ebs`
/// (PutSnapshotBlock may leave its body unsigned: its checksum header is
/// signed and checked).
async fn answer_ebs(
    state: &State,
    peer: SocketAddr,
    req: &HttpRequest<'_>,
    body: Bytes,
    request_id: &str,
    operation_seen: &mut String,
) -> Result<crate::ebs::Response, Rejection> {
    let policy = VerifyPolicy {
        service: crate::ebs::EBS_SERVICE,
        regions: &state.opts.regions,
        now: (state.opts.clock)(),
    };
    let lookup = |id: &str| state.service.credentials(id);
    let verified = if crate::ebs::is_put_block(req.method, req.path) {
        sigv4::verify_unsigned_payload_allowed(req, &policy, lookup)?
    } else {
        sigv4::verify(req, &policy, lookup)?
    };
    operation_seen.push_str(&format!(
        "ebs:{}",
        crate::ebs::action_of(req.method, req.path)
    ));
    let mut ctx = RequestContext::new(verified.credentials.caller, verified.region);
    ctx.source_ip = Some(peer.ip().to_string());
    ctx.user_agent = req.header("user-agent").map(|ua| truncate(ua, 256));
    ctx.request_id = Some(request_id.to_string());
    let service = state.service.clone();
    let owned = OwnedRequest {
        method: req.method.to_string(),
        path: req.path.to_string(),
        query: req.query.to_string(),
        headers: req.headers.to_vec(),
        body,
    };
    tokio::task::spawn_blocking(move || {
        service.ebs(
            &ctx,
            &crate::ebs::Request {
                method: &owned.method,
                path: &owned.path,
                query: &owned.query,
                headers: &owned.headers,
                body: &owned.body,
            },
        )
    })
    .await
    .map_err(|_| Rejection::from(KmsError::internal("EBS failed while answering")))
}

/// A request moved onto a blocking thread.
struct OwnedRequest {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Bytes,
}

/// The EBS error of a rejection (authentication, body size).
fn ebs_error(r: &Rejection) -> crate::snapshot::direct::DirectError {
    use crate::snapshot::direct::DirectError;
    let code = match r.error.code {
        ErrorCode::UnrecognizedClientException
        | ErrorCode::ExpiredTokenException
        | ErrorCode::InvalidSignatureException
        | ErrorCode::IncompleteSignatureException
        | ErrorCode::MissingAuthenticationTokenException => "AccessDeniedException",
        _ if r.error.is_internal() => "InternalServerException",
        _ => "ValidationException",
    };
    let reason = match code {
        "AccessDeniedException" => Some("UNAUTHORIZED_ACCOUNT"),
        "ValidationException" => Some("INVALID_PARAMETER_VALUE"),
        _ => None,
    };
    DirectError::new(code, reason, r.error.message.clone())
}

/// The EC2 error of a rejection: an EC2 error carried as is, an
/// authentication failure under EC2's name.
fn ec2_error(r: &Rejection) -> crate::api_error::ApiError {
    use crate::api_error::ApiError;
    if let Some(e) = &r.ec2 {
        return e.clone();
    }
    let code = match r.error.code {
        ErrorCode::UnrecognizedClientException => "AuthFailure",
        ErrorCode::ExpiredTokenException => "RequestExpired",
        ErrorCode::InvalidSignatureException => "SignatureDoesNotMatch",
        ErrorCode::IncompleteSignatureException => "IncompleteSignature",
        ErrorCode::MissingAuthenticationTokenException => "MissingAuthenticationToken",
        ErrorCode::RequestEntityTooLargeException => "RequestEntityTooLarge",
        _ if r.error.is_internal() => "InternalError",
        ErrorCode::UnknownOperationException => "InvalidAction",
        _ => "InvalidParameterValue",
    };
    ApiError::new(code, r.error.message.clone())
}

fn too_large(max: usize) -> Rejection {
    reject(
        413,
        ErrorCode::RequestEntityTooLargeException,
        format!("The request body exceeds the limit of {max} bytes."),
    )
}

fn runtime(opts: &ServeOptions) -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("kms-http-worker")
        .max_blocking_threads(opts.max_blocking_threads.max(1))
        .build()
}

/// Pending connections the kernel queues while the server is busy. The
/// standard library's 128 drops connection attempts of a burst (the client
/// then retries after a second); the kernel caps it at `somaxconn`.
const LISTEN_BACKLOG: u32 = 1024;

/// Binds `listen` with a deep accept queue. Needs a tokio runtime context.
fn bind(listen: SocketAddr) -> io::Result<TcpListener> {
    let attempt = || -> io::Result<TcpListener> {
        let socket = if listen.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(listen)?;
        socket.listen(LISTEN_BACKLOG)
    };
    attempt().map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {listen}: {e}")))
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}
