//! Client connections: the accept loop `serve` runs, with the limits a public service needs
//! and `axum::serve` has no settings for (docs/architecture.md, "Connection handling").
//!
//! - At most `max_connections` at once; one more is answered 503 at once and closed.
//! - A request head must arrive within `header_timeout_secs`; hyper's header read timeout also
//!   runs while a keep-alive connection waits for its next request, so idle ones close too.
//! - A body must arrive within `body_timeout_secs` of its head, else the answer is 408.
//! - Heads over the limits, and bodies declared over `max_body_bytes`, are answered before
//!   anything of the body is read, so no `100 Continue` invites the client to send it.
//! - The answers hyper writes itself for requests it cannot parse get the JSON error body.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::error::ApiError;
use crate::routes;
use crate::settings::Settings;
use crate::state::AppState;

/// Longest request URI (path and query) the router is given; longer ones answer 414.
const MAX_URI_BYTES: usize = 8 * 1024;
/// Most bytes of header fields the router is given; more answer 431.
const MAX_HEADER_BYTES: usize = 16 * 1024;
/// hyper's read buffer: a head that does not fit is answered 431 by hyper itself. Above our
/// own limits so that they, with their exact messages, are what clients normally meet, yet
/// small enough that `max_connections` slow heads cannot hold much memory.
const HEAD_BUFFER_BYTES: usize = 96 * 1024;
/// How long a refused connection is read from before it is closed (see `linger`).
const LINGER: Duration = Duration::from_secs(1);

/// What the accept loop enforces, from the settings.
#[derive(Debug, Clone, Copy)]
struct Limits {
    header_timeout: Duration,
    body_timeout: Duration,
    max_connections: usize,
    max_body_bytes: usize,
}

impl From<&Settings> for Limits {
    fn from(s: &Settings) -> Self {
        Limits {
            header_timeout: Duration::from_secs(s.header_timeout_secs),
            body_timeout: Duration::from_secs(s.body_timeout_secs),
            max_connections: s.max_connections,
            max_body_bytes: s.max_body_bytes,
        }
    }
}

/// Serves the service's router on `listener` until `shutdown` completes, then stops
/// accepting and waits for the open connections to finish their requests (long-lived
/// answers end on `state.shutdown`). `serve` runs this; tests run it on a port of their own.
pub async fn serve_with(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send,
) {
    let limits = Limits::from(&state.settings);
    serve_router(listener, routes::app(state), limits, shutdown).await;
}

async fn serve_router(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let http = http1_builder(&limits);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                pause_after(e).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%remote, "over max_connections: answered 503");
            tokio::spawn(refuse_connection(stream, limits.max_connections));
            continue;
        };
        let router = router.clone();
        let service = service_fn(move |req| handle(req, router.clone(), limits, remote));
        let io = TokioIo::new(JsonErrorIo::new(stream));
        let connection = graceful.watch(http.serve_connection(io, service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                // Timeouts, resets and unparsable requests: the client's doing, not ours.
                tracing::debug!(%remote, error = %e, "connection ended");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

fn http1_builder(limits: &Limits) -> http1::Builder {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(HEAD_BUFFER_BYTES);
    http
}

/// An accept error of one connection (reset before it was accepted) is no concern of the
/// loop; others (out of file descriptors) get a pause so that the loop does not spin, as in
/// `axum::serve`.
async fn pause_after(e: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// One request: checked against the limits, then given to the router with the client's
/// address (`ConnectInfo`, which rate limits key on) and a body with a deadline.
async fn handle(
    mut req: Request<Incoming>,
    router: Router,
    limits: Limits,
    remote: SocketAddr,
) -> Result<Response, Infallible> {
    if let Some(refusal) = check_head(&req, &limits) {
        let (status, code) = (refusal.status, refusal.code);
        tracing::info!(%remote, %status, code, "refused before reading the body");
        return Ok(closing(refusal.into_response()));
    }
    req.extensions_mut().insert(ConnectInfo(remote));
    let expired = Arc::new(AtomicBool::new(false));
    let req = req.map(|body| DeadlineBody::new(body, limits.body_timeout, expired.clone()));
    let Ok(response) = router.oneshot(req).await;
    // Whatever the handler made of the failed read, the client is told what happened.
    if expired.load(Ordering::Relaxed) {
        let secs = limits.body_timeout.as_secs();
        tracing::info!(%remote, secs, "request body timed out");
        let timeout = ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!("the request body did not arrive within {secs} s"),
        );
        return Ok(closing(timeout.into_response()));
    }
    Ok(response)
}

/// The limits a request is held to before its body is touched. hyper sends `100 Continue`
/// only when the body is first read, so a refusal here never invites the client to send it.
fn check_head(req: &Request<Incoming>, limits: &Limits) -> Option<ApiError> {
    let uri = req.uri();
    let uri_bytes = uri.path_and_query().map_or(0, |p| p.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len());
    if uri_bytes > MAX_URI_BYTES {
        return Some(uri_too_long());
    }
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return Some(headers_too_large());
    }
    // hyper's lower bound is the Content-Length it parsed (0 for a chunked body, which the
    // router's body limit counts instead).
    if req.body().size_hint().lower() > limits.max_body_bytes as u64 {
        return Some(ApiError::body_too_large(limits.max_body_bytes));
    }
    None
}

fn uri_too_long() -> ApiError {
    ApiError::new(
        StatusCode::URI_TOO_LONG,
        "uri_too_long",
        format!("the request URI is over this server's limit of {MAX_URI_BYTES} bytes"),
    )
}

fn headers_too_large() -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "request_header_fields_too_large",
        format!(
            "the request headers are over this server's limits: {MAX_HEADER_BYTES} bytes, \
             100 fields"
        ),
    )
}

/// Asks hyper to close the connection after this answer: the rest of the request was never
/// read, so the connection cannot carry another.
fn closing(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A request body that must arrive by a deadline. Past it, reading fails and `expired` is set,
/// so that `handle` answers 408. The deadline covers the whole body, not the gap between
/// bytes: a client trickling a byte a second would otherwise hold the connection forever.
struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    expired: Arc<AtomicBool>,
}

#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
struct BodyTimeout;

impl DeadlineBody {
    fn new(inner: Incoming, timeout: Duration, expired: Arc<AtomicBool>) -> Self {
        DeadlineBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            expired,
        }
    }
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        // The deadline before the bytes: a body whose bytes are ready at every poll is still
        // held to it. A body already read whole is not, whenever it is polled again.
        if !this.inner.is_end_stream() && this.deadline.as_mut().poll(cx).is_ready() {
            this.expired.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(BodyTimeout.into())));
        }
        Pin::new(&mut this.inner)
            .poll_frame(cx)
            .map_err(axum::BoxError::from)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Answers a connection over the cap without reading its request, so that the client learns
/// at once instead of waiting unseen, then closes it.
async fn refuse_connection(mut stream: TcpStream, max_connections: usize) {
    let refusal = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "too_many_connections",
        format!("this server has its limit of {max_connections} connections open; retry shortly"),
    )
    .with_retry_after(1);
    if stream.write_all(&closing_answer(&refusal)).await.is_ok() {
        linger(stream).await;
    }
}

/// Sends FIN, then reads what the client still sends for a moment before closing. Closing a
/// socket with unread input makes the kernel reset the connection, and a reset can destroy
/// an answer the client has not read yet.
async fn linger(mut stream: TcpStream) {
    let drain = async {
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, io::Error>(())
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// `error` as a whole HTTP/1.1 answer on a connection that closes after it.
fn closing_answer(error: &ApiError) -> Vec<u8> {
    let body = error.to_json();
    let mut answer = format!(
        "HTTP/1.1 {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n",
        error.status,
        body.len()
    );
    if let Some(secs) = error.retry_after {
        answer.push_str(&format!("retry-after: {secs}\r\n"));
    }
    answer.push_str("\r\n");
    let mut answer = answer.into_bytes();
    answer.extend_from_slice(&body);
    answer
}

/// The client's socket, on which the answers hyper writes by itself get the JSON error body.
///
/// hyper answers a request it cannot parse (a control character in a header, a head over its
/// buffer, a URI over 64 KiB) with an empty 400, 431 or 414 and closes the connection; no
/// service sees such a request, and no hyper setting shapes the answer. Raising hyper's limits
/// and checking in the service covers sizes only, never a malformed head, so the answer is
/// rewritten on its way out. hyper's answer is recognised by its form (`hyper_error_status`).
struct JsonErrorIo<T> {
    inner: T,
    replacement: Option<Replacement>,
}

/// Our answer in place of hyper's, and how far it has been written.
struct Replacement {
    bytes: Vec<u8>,
    written: usize,
    /// The length of hyper's write it stands for, reported once it is all written.
    replaces: usize,
}

impl<T> JsonErrorIo<T> {
    fn new(inner: T) -> Self {
        JsonErrorIo {
            inner,
            replacement: None,
        }
    }
}

impl<T: AsyncWrite + Unpin> JsonErrorIo<T> {
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some(r) = self.replacement.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        while r.written < r.bytes.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &r.bytes[r.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            r.written += n;
        }
        let replaces = r.replaces;
        self.replacement = None;
        Poll::Ready(Ok(replaces))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for JsonErrorIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonErrorIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.replacement.is_none() {
            let Some(status) = hyper_error_status(buf) else {
                return Pin::new(&mut this.inner).poll_write(cx, buf);
            };
            tracing::debug!(%status, "hyper's answer to an unparsable request, given a JSON body");
            this.replacement = Some(Replacement {
                bytes: closing_answer(&unparsable(status)),
                written: 0,
                replaces: buf.len(),
            });
        }
        // A replacement under way continues whatever hyper passes again: it is the same head.
        this.poll_replacement(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // hyper's own answer is a head alone, one slice; answers with bodies pass untouched.
        let mut filled = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (filled.next(), filled.next()) {
            return self.poll_write(cx, only);
        }
        let this = self.get_mut();
        if this.replacement.is_some() {
            return this.poll_replacement(cx);
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The status of hyper's own answer to an unparsable request (hyper's `Server::on_error`,
/// proto/h1/role.rs): a 4xx head alone, with `content-length: 0` and without the
/// `x-request-id` that the router puts on every answer. No answer of the router looks like
/// this: each carries an `x-request-id`, and each error a JSON body.
fn hyper_error_status(buf: &[u8]) -> Option<StatusCode> {
    // Most writes are told apart by their first bytes, without looking further.
    if !(buf.starts_with(b"HTTP/1.1 4") || buf.starts_with(b"HTTP/1.0 4")) {
        return None;
    }
    let head = buf.strip_suffix(b"\r\n\r\n")?;
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let code = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))?
        .get(..3)?;
    let status = StatusCode::from_bytes(code.as_bytes()).ok()?;
    let mut empty = false;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let name = name.trim();
        if name.eq_ignore_ascii_case("x-request-id") {
            return None;
        }
        empty |= name.eq_ignore_ascii_case("content-length") && value.trim() == "0";
    }
    (status.is_client_error() && empty).then_some(status)
}

/// Our words for hyper's refusals (hyper's `Server::on_error` makes only these three).
fn unparsable(status: StatusCode) -> ApiError {
    match status {
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => headers_too_large(),
        StatusCode::URI_TOO_LONG => uri_too_long(),
        _ => ApiError::new(
            status,
            "invalid_request",
            "the request is not valid HTTP/1.1: a malformed request line, header or \
             Content-Length (header values may not hold control characters)",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hyper_s_own_empty_error_answers_are_rewritten() {
        let hyper_431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\n\
            content-length: 0\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n";
        assert_eq!(
            hyper_error_status(hyper_431),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
        let ours = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nx-request-id: req_1\r\n\r\n";
        assert_eq!(hyper_error_status(ours), None);
        let with_body = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(hyper_error_status(with_body), None);
        let ok = b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(hyper_error_status(ok), None);
    }

    /// The header timeout runs only while a head is awaited, never while an answer is made;
    /// handlers see the client's address, which rate limits key on.
    #[tokio::test]
    async fn slow_answers_outlive_the_header_timeout_and_know_the_client() {
        use axum::routing::get;
        let router = Router::new().route(
            "/slow",
            get(|ConnectInfo(client): ConnectInfo<SocketAddr>| async move {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                client.to_string()
            }),
        );
        let limits = Limits {
            header_timeout: Duration::from_secs(1),
            body_timeout: Duration::from_secs(1),
            max_connections: 4,
            max_body_bytes: 1024,
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve_router(
            listener,
            router,
            limits,
            std::future::pending(),
        ));
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let client = stream.local_addr().unwrap();
        stream
            .write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        let read = stream.read_to_string(&mut answer);
        tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .unwrap()
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with(&client.to_string()), "{answer}");
    }

    #[test]
    fn closing_answers_are_whole_json_answers() {
        let answer = closing_answer(&ApiError::body_too_large(1024));
        let text = String::from_utf8(answer).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 413 Payload Too Large\r\n"),
            "{head}"
        );
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "request_too_large");
    }
}
