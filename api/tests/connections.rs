//! Connection handling against the real accept loop (`serve_with`) on a loopback port: slow and
//! idle clients, the connection cap, oversized and malformed requests. The clients are raw
//! TCP sockets so that every byte on the wire is the test's choice.
//!
//! The timeouts are 1 s, so each test waits a second or two; the bounds on elapsed time are
//! loose (a loaded machine may be slow), they only tell "at the timeout" from "never".

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use letterpress_api::{Settings, Shared, serve_with};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A server on a free loopback port, stopped by `stop`.
struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lp-conn-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Serves with 1 s timeouts, a 4 KiB body limit and whatever `tweak` changes.
async fn start(name: &str, tweak: impl FnOnce(&mut Settings)) -> Server {
    let mut settings = Settings {
        data_dir: temp_dir(name),
        rate_limit_per_minute: 0,
        header_timeout_secs: 1,
        body_timeout_secs: 1,
        max_body_bytes: 4096,
        ..Settings::default()
    };
    tweak(&mut settings);
    settings.check().unwrap();
    let state = Shared::new(settings).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_with(listener, state, async move {
        let _ = stopped.await;
    }));
    Server { addr, stop, task }
}

/// What the server sent until it closed the connection, and when it closed it (`None`: still
/// open after `limit`). A reset counts as closing.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, Option<Duration>) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let left = limit.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return (received, None),
            Ok(Ok(0)) | Ok(Err(_)) => return (received, Some(started.elapsed())),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

/// An answer's status, head (lower-cased) and JSON body.
fn answer(bytes: &[u8]) -> (u16, String, Value) {
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no whole answer in {text:?}"));
    let status = head[9..12].parse().unwrap();
    let body = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text:?}"));
    (status, head.to_ascii_lowercase(), body)
}

/// Sends `request` on a new connection and returns the answer, which must be a JSON error
/// with `status` and `code` on a connection the server then closed.
async fn refused(addr: SocketAddr, request: &[u8], status: u16, code: &str) -> Value {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let (bytes, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    let (got, head, body) = answer(&bytes);
    assert_eq!(
        (got, body["error"]["code"].as_str()),
        (status, Some(code)),
        "{body}"
    );
    assert!(head.contains("content-type: application/json"), "{head}");
    assert!(closed.is_some(), "the connection stays open after {status}");
    body
}

#[tokio::test]
async fn slow_and_idle_heads_are_disconnected_after_the_header_timeout() {
    let server = start("heads", |_| {}).await;
    let idle = async {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        read_until_closed(&mut stream, Duration::from_secs(5)).await
    };
    let trickle = async {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let (mut read, mut write) = stream.split();
        let writer = async {
            write
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ")
                .await?;
            for _ in 0..50 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                write.write_all(b"a").await?;
            }
            std::io::Result::Ok(())
        };
        let reader = async {
            let mut buf = [0u8; 1024];
            let started = Instant::now();
            let n = read.read(&mut buf).await.unwrap_or(0);
            (n, started.elapsed())
        };
        tokio::select! {
            _ = writer => panic!("5 s of trickled header were read without a timeout"),
            read = reader => read,
        }
    };
    let keep_alive = async {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        read_until_closed(&mut stream, Duration::from_secs(5)).await
    };
    let ((idle_bytes, idle), (trickle_bytes, trickle), (kept_bytes, kept)) =
        tokio::join!(idle, trickle, keep_alive);
    let within = |t: Duration| t > Duration::from_millis(800) && t < Duration::from_secs(4);
    assert!(
        idle_bytes.is_empty() && idle.is_some_and(within),
        "idle: {idle:?}"
    );
    assert!(
        trickle_bytes == 0 && within(trickle),
        "trickled: {trickle:?}"
    );
    assert!(kept_bytes.starts_with(b"HTTP/1.1 200"), "keep-alive answer");
    assert!(kept.is_some_and(within), "idle keep-alive: {kept:?}");
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_answered_408() {
    let server = start("body", |_| {}).await;
    let head = b"POST /v1/layouts HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
                 Content-Length: 100\r\n\r\n";
    // A few bytes, then nothing.
    let mut stalled = TcpStream::connect(server.addr).await.unwrap();
    stalled.write_all(head).await.unwrap();
    for byte in b"{\"p" {
        stalled.write_all(&[*byte]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let (bytes, closed) = read_until_closed(&mut stalled, Duration::from_secs(5)).await;
    let (status, head_back, body) = answer(&bytes);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (408, Some("request_timeout"))
    );
    assert!(head_back.contains("connection: close"), "{head_back}");
    assert!(
        closed.is_some_and(|t| t < Duration::from_secs(3)),
        "{closed:?}"
    );

    // A byte every 50 ms, which no gap-between-bytes timeout would ever stop.
    let mut trickle = TcpStream::connect(server.addr).await.unwrap();
    trickle.write_all(head).await.unwrap();
    let started = Instant::now();
    let (mut read, mut write) = trickle.split();
    let writer = async {
        for _ in 0..100 {
            write.write_all(b" ").await?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        std::io::Result::Ok(())
    };
    let mut received = Vec::new();
    tokio::select! {
        _ = writer => {}
        _ = read.read_to_end(&mut received) => {}
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(3),
        "trickled body held {elapsed:?}"
    );
    if !received.is_empty() {
        assert_eq!(answer(&received).0, 408);
    }
}

#[tokio::test]
async fn a_connection_over_the_cap_is_answered_503_at_once() {
    let server = start("cap", |s| {
        s.max_connections = 2;
        s.header_timeout_secs = 30;
    })
    .await;
    let first = TcpStream::connect(server.addr).await.unwrap();
    let _second = TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    let body = refused(
        server.addr,
        b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
        503,
        "too_many_connections",
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(2), "{body}");

    // A closed connection frees its place.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let (bytes, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
        if bytes.starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "no place after a close");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_declared_body_over_the_limit_is_refused_without_100_continue() {
    let server = start("expect", |_| {}).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(
            b"POST /v1/generations HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
              Content-Length: 1073741824\r\nExpect: 100-continue\r\n\r\n",
        )
        .await
        .unwrap();
    let started = Instant::now();
    let (bytes, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "not at once"
    );
    assert!(closed.is_some());
    assert!(
        bytes.starts_with(b"HTTP/1.1 413 "),
        "{:?}",
        String::from_utf8_lossy(&bytes)
    );
    let (_, _, declared) = answer(&bytes);
    assert_eq!(declared["error"]["code"], "request_too_large");

    // The same answer as for a body found too large while reading it (JsonBody).
    let chunk = format!("{{\"prompt\": \"{}\"}}", "x".repeat(5000));
    let counted = refused(
        server.addr,
        format!(
            "POST /v1/layouts HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
            chunk.len()
        )
        .as_bytes(),
        413,
        "request_too_large",
    )
    .await;
    assert_eq!(declared, counted);
}

#[tokio::test]
async fn heads_over_the_limits_or_malformed_get_json_errors() {
    let server = start("heads-json", |_| {}).await;
    let addr = server.addr;
    let big_header = format!(
        "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20 << 10)
    );
    refused(
        addr,
        big_header.as_bytes(),
        431,
        "request_header_fields_too_large",
    )
    .await;
    // Over hyper's 100 header fields: hyper's own 431, given the JSON body.
    let many: String = (0..101).map(|i| format!("X-{i}: 1\r\n")).collect();
    let many_headers = format!("GET /healthz HTTP/1.1\r\nHost: t\r\n{many}\r\n");
    refused(
        addr,
        many_headers.as_bytes(),
        431,
        "request_header_fields_too_large",
    )
    .await;

    let long_uri = format!(
        "GET /healthz?{} HTTP/1.1\r\nHost: t\r\n\r\n",
        "q".repeat(20 << 10)
    );
    refused(addr, long_uri.as_bytes(), 414, "uri_too_long").await;
    // Over hyper's 65534-byte URI limit: hyper's own 414, given the JSON body.
    let longer_uri = format!(
        "GET /healthz?{} HTTP/1.1\r\nHost: t\r\n\r\n",
        "q".repeat(70 << 10)
    );
    refused(addr, longer_uri.as_bytes(), 414, "uri_too_long").await;

    let control = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Bad: a\x01b\r\n\r\n";
    refused(addr, control, 400, "invalid_request").await;
    let bad_length = b"POST /v1/layouts HTTP/1.1\r\nHost: t\r\nContent-Length: ten\r\n\r\n";
    refused(addr, bad_length, 400, "invalid_request").await;
}

#[tokio::test]
async fn shutdown_stops_accepting_and_lets_requests_in_flight_finish() {
    let server = start("shutdown", |s| {
        s.header_timeout_secs = 5;
        s.body_timeout_secs = 5;
    })
    .await;
    let body = br#"{"prompt": "a poster that says 'OPEN'", "seed": 3}"#;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /v1/layouts HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    server.stop.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        TcpStream::connect(server.addr).await.is_err(),
        "still accepting after shutdown"
    );
    stream.write_all(&body[10..]).await.unwrap();
    let (bytes, closed) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(
        bytes.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&bytes)
    );
    assert!(closed.is_some(), "the connection outlived shutdown");
    tokio::time::timeout(Duration::from_secs(5), server.task)
        .await
        .expect("serve_with returns once its connections are done")
        .unwrap();
}
