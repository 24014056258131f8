//! An HTTP/1.1 static file server on `127.0.0.1:<free port>`, on `std::net` and threads.
//!
//! - `GET` and `HEAD`; `404` for a missing file or a directory, `405` for other methods.
//! - `ETag` (a hash of the content) and `Last-Modified` (the file's mtime, but moved forward by
//!   at least one second each time the content of a path changes, so that
//!   `If-Modified-Since` works even when a test republishes within the same second).
//! - `If-None-Match` (takes precedence) and `If-Modified-Since` answered with `304`.
//! - Persistent connections (HTTP/1.1 keep-alive, pipelined requests) and `Connection: close`.
//! - Every request is logged (method, path, status, request headers) before the response is
//!   sent, so a client that has its answer can already see it in [`TestServer::requests`].
//! - [`TestServer::fail_next`] makes the next matching request fail with a given status.
//! - [`TestServer::fault`] makes every matching request misbehave like a broken mirror: stall
//!   in the middle of the body, send an endless body, or trickle it a byte at a time.
//! - Stops accepting when dropped; open connections end within a fraction of a second.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, UNIX_EPOCH};

use chrono::{DateTime, Utc};

/// How long an idle keep-alive connection is kept open.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a blocked connection thread looks at the stop flag.
const POLL: Duration = Duration::from_millis(100);
/// Largest request head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// One logged request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// Path as sent, without the query string (still percent-encoded).
    pub path: String,
    pub status: u16,
    /// Request headers in order, names as sent.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// First value of request header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the request carried `If-None-Match` or `If-Modified-Since`.
    pub fn is_conditional(&self) -> bool {
        self.header("If-None-Match").is_some() || self.header("If-Modified-Since").is_some()
    }
}

struct Failure {
    path_substring: String,
    status: u16,
    remaining: usize,
}

/// How a response misbehaves ([`TestServer::fault`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The head (with the file's `Content-Length`) and the first `n` bytes of the body, then
    /// nothing more; the connection stays open until the server is dropped (or 120 s).
    StallAfter(usize),
    /// The file, then zero bytes without end (no `Content-Length`), until the client closes
    /// the connection or the server is dropped.
    Endless,
    /// The body (with the file's `Content-Length`) one byte every 100 ms.
    Trickle,
}

struct Shared {
    root: PathBuf,
    faults: Mutex<Vec<(String, Fault)>>,
    log: Mutex<Vec<Request>>,
    failures: Mutex<Vec<Failure>>,
    /// path -> (etag, Last-Modified in Unix seconds) last served.
    validators: Mutex<HashMap<PathBuf, (String, i64)>>,
    stop: AtomicBool,
}

/// A file server for one directory; see the module documentation.
pub struct TestServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Serves `root` (e.g. [`TestArchive::dir`](super::archive::TestArchive::dir)) on a free
    /// port of 127.0.0.1.
    pub fn start(root: impl Into<PathBuf>) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            root: root.into(),
            faults: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            failures: Mutex::new(Vec::new()),
            validators: Mutex::new(HashMap::new()),
            stop: AtomicBool::new(false),
        });
        let accept_shared = Arc::clone(&shared);
        let accept = std::thread::Builder::new()
            .name(format!("test-http-{}", addr.port()))
            .spawn(move || {
                for stream in listener.incoming() {
                    if accept_shared.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let conn_shared = Arc::clone(&accept_shared);
                    let _ = std::thread::Builder::new()
                        .name("test-http-conn".into())
                        .spawn(move || serve_connection(stream, &conn_shared));
                }
            })
            .expect("spawn accept thread");
        TestServer {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The served directory.
    pub fn root(&self) -> &Path {
        &self.shared.root
    }

    /// Every request since start or the last [`clear_log`](Self::clear_log), in order.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.log.lock().unwrap().clone()
    }

    pub fn clear_log(&self) {
        self.shared.log.lock().unwrap().clear();
    }

    /// Number of logged requests whose path contains `path_substring` (any method, status).
    pub fn count(&self, path_substring: &str) -> usize {
        self.matching(path_substring).len()
    }

    /// Number of logged requests whose path contains `path_substring` and got `status`.
    pub fn count_status(&self, path_substring: &str, status: u16) -> usize {
        self.matching(path_substring)
            .iter()
            .filter(|r| r.status == status)
            .count()
    }

    /// Logged requests whose path contains `path_substring`.
    pub fn matching(&self, path_substring: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.contains(path_substring))
            .collect()
    }

    /// The next request whose path contains `path_substring` gets `status` (with a short text
    /// body) instead of the file.
    pub fn fail_next(&self, path_substring: &str, status: u16) {
        self.fail_times(path_substring, status, 1);
    }

    /// The next `times` requests whose path contains `path_substring` get `status`.
    pub fn fail_times(&self, path_substring: &str, status: u16, times: usize) {
        self.shared.failures.lock().unwrap().push(Failure {
            path_substring: path_substring.to_string(),
            status,
            remaining: times,
        });
    }

    /// Every request whose path contains `path_substring` gets `fault` (until
    /// [`clear_faults`](Self::clear_faults)); a missing file counts as 4 KiB of spaces.
    pub fn fault(&self, path_substring: &str, fault: Fault) {
        self.shared
            .faults
            .lock()
            .unwrap()
            .push((path_substring.to_string(), fault));
    }

    pub fn clear_faults(&self) {
        self.shared.faults.lock().unwrap().clear();
    }

    /// Forgets failures set up with [`fail_next`](Self::fail_next) and not used yet.
    pub fn clear_failures(&self) {
        self.shared.failures.lock().unwrap().clear();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(handle) = self.accept.take() {
            let _ = handle.join();
        }
    }
}

struct Head {
    method: String,
    target: String,
    version: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn keep_alive(&self) -> bool {
        let connection = self.header("Connection").unwrap_or("").to_ascii_lowercase();
        let tokens: Vec<&str> = connection.split(',').map(str::trim).collect();
        if self.version == "HTTP/1.0" {
            tokens.contains(&"keep-alive")
        } else {
            !tokens.contains(&"close")
        }
    }
}

fn serve_connection(mut stream: TcpStream, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(POLL));
    let _ = stream.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::new();
    while let Some(head) = read_head(&mut stream, &mut buf, shared) {
        // Discard a request body, if any.
        let body_len: usize = head
            .header("Content-Length")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if !skip_body(&mut stream, &mut buf, body_len, shared) {
            break;
        }
        if let Some(fault) = fault_for(&head, shared) {
            misbehave(&mut stream, &head, shared, fault);
            break;
        }
        let keep_alive = head.keep_alive();
        let response = respond(&head, shared, keep_alive);
        if stream.write_all(&response).is_err() || !keep_alive {
            break;
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
}

fn fault_for(head: &Head, shared: &Shared) -> Option<Fault> {
    let path = head.target.split(['?', '#']).next().unwrap_or("");
    shared
        .faults
        .lock()
        .unwrap()
        .iter()
        .find(|(p, _)| path.contains(p.as_str()))
        .map(|(_, f)| *f)
}

/// Answers `head` the way `fault` says, then returns (the caller closes the connection).
fn misbehave(stream: &mut TcpStream, head: &Head, shared: &Shared, fault: Fault) {
    let path = head
        .target
        .split(['?', '#'])
        .next()
        .unwrap_or("")
        .to_string();
    let body = resolve(&shared.root, &path)
        .and_then(|f| std::fs::read(f).ok())
        .unwrap_or_else(|| vec![b' '; 4096]);
    shared.log.lock().unwrap().push(Request {
        method: head.method.clone(),
        path,
        status: 200,
        headers: head.headers.clone(),
    });
    let length = match fault {
        Fault::Endless => String::new(),
        _ => format!("Content-Length: {}\r\n", body.len()),
    };
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n{length}Connection: close\r\n\r\n"
    );
    let _ = stream.set_write_timeout(Some(POLL));
    let stopped = || shared.stop.load(Ordering::SeqCst);
    // Writes all of `data` unless the client goes away or the server stops.
    let send = |stream: &mut TcpStream, mut data: &[u8]| -> bool {
        while !data.is_empty() {
            if stopped() {
                return false;
            }
            match stream.write(data) {
                Ok(0) => return false,
                Ok(n) => data = &data[n..],
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => return false,
            }
        }
        true
    };
    if !send(stream, head.as_bytes()) {
        return;
    }
    match fault {
        Fault::StallAfter(n) => {
            if !send(stream, &body[..n.min(body.len())]) {
                return;
            }
            let since = Instant::now();
            while !stopped() && since.elapsed() < Duration::from_secs(120) {
                std::thread::sleep(POLL);
            }
        }
        Fault::Endless => {
            if !send(stream, &body) {
                return;
            }
            let filler = vec![0u8; 64 * 1024];
            while send(stream, &filler) {}
        }
        Fault::Trickle => {
            for byte in body.chunks(1) {
                if !send(stream, byte) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Reads one request head (through the blank line); `None` at EOF, error, idle timeout or stop.
fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>, shared: &Shared) -> Option<Head> {
    let idle_since = Instant::now();
    loop {
        // Tolerate blank lines before a request (RFC 9112 2.2).
        while buf.starts_with(b"\r\n") {
            buf.drain(..2);
        }
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head: Vec<u8> = buf.drain(..end + 4).collect();
            return parse_head(&head);
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
        if shared.stop.load(Ordering::SeqCst) || idle_since.elapsed() > IDLE_TIMEOUT {
            return None;
        }
        let mut chunk = [0u8; 8192];
        match stream.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return None,
        }
    }
}

fn skip_body(stream: &mut TcpStream, buf: &mut Vec<u8>, mut len: usize, shared: &Shared) -> bool {
    let from_buf = len.min(buf.len());
    buf.drain(..from_buf);
    len -= from_buf;
    let started = Instant::now();
    let mut chunk = [0u8; 8192];
    while len > 0 {
        if shared.stop.load(Ordering::SeqCst) || started.elapsed() > IDLE_TIMEOUT {
            return false;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) => {
                let used = n.min(len);
                len -= used;
                buf.extend_from_slice(&chunk[used..n]);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return false,
        }
    }
    true
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(head: &[u8]) -> Option<Head> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_string();
    let target = request_line.next()?.to_string();
    let version = request_line.next().unwrap_or("HTTP/1.0").to_string();
    let headers = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.split_once(':')?;
            Some((name.trim().to_string(), value.trim().to_string()))
        })
        .collect();
    Some(Head {
        method,
        target,
        version,
        headers,
    })
}

struct Response {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

fn respond(head: &Head, shared: &Shared, keep_alive: bool) -> Vec<u8> {
    let path = head
        .target
        .split(['?', '#'])
        .next()
        .unwrap_or("")
        .to_string();
    let mut response = handle(head, &path, shared);
    let is_head = head.method == "HEAD";

    shared.log.lock().unwrap().push(Request {
        method: head.method.clone(),
        path,
        status: response.status,
        headers: head.headers.clone(),
    });

    response.headers.push(("Date", http_date(Utc::now())));
    response.headers.push(("Server", "rebake-test-http".into()));
    if response.status != 304 {
        response
            .headers
            .push(("Content-Length", response.body.len().to_string()));
    }
    response.headers.push((
        "Connection",
        if keep_alive { "keep-alive" } else { "close" }.into(),
    ));

    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        response.status,
        reason(response.status)
    );
    for (name, value) in &response.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    if !is_head && response.status != 304 {
        out.extend_from_slice(&response.body);
    }
    out
}

fn handle(head: &Head, path: &str, shared: &Shared) -> Response {
    let text = |status: u16, body: &str| Response {
        status,
        headers: vec![("Content-Type", "text/plain; charset=utf-8".into())],
        body: body.as_bytes().to_vec(),
    };

    if let Some(status) = take_failure(shared, path) {
        return text(status, "failure injected by TestServer::fail_next\n");
    }
    if head.method != "GET" && head.method != "HEAD" {
        let mut r = text(405, "only GET and HEAD\n");
        r.headers.push(("Allow", "GET, HEAD".into()));
        return r;
    }
    let Some(file) = resolve(&shared.root, path) else {
        return text(404, "not found\n");
    };
    let Ok(body) = std::fs::read(&file) else {
        return text(404, "not found\n");
    };
    let mtime = std::fs::metadata(&file)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64);
    let etag = format!("\"{}\"", &super::sha256_hex(&body)[..32]);
    let last_modified = {
        let mut validators = shared.validators.lock().unwrap();
        let lm = match validators.get(&file) {
            Some((old_etag, old_lm)) if *old_etag == etag => *old_lm,
            Some((_, old_lm)) => mtime.max(old_lm + 1),
            None => mtime,
        };
        validators.insert(file.clone(), (etag.clone(), lm));
        lm
    };

    let validators = vec![
        ("ETag", etag.clone()),
        (
            "Last-Modified",
            http_date(DateTime::from_timestamp(last_modified, 0).unwrap_or_default()),
        ),
    ];
    let not_modified = match head.header("If-None-Match") {
        Some(inm) => inm
            .split(',')
            .map(|t| t.trim().trim_start_matches("W/"))
            .any(|t| t == "*" || t == etag),
        None => head
            .header("If-Modified-Since")
            .and_then(|ims| DateTime::parse_from_rfc2822(ims).ok())
            .is_some_and(|ims| last_modified <= ims.timestamp()),
    };
    if not_modified {
        return Response {
            status: 304,
            headers: validators,
            body: Vec::new(),
        };
    }
    let mut headers = validators;
    headers.push(("Content-Type", content_type(&file).into()));
    Response {
        status: 200,
        headers,
        body,
    }
}

fn take_failure(shared: &Shared, path: &str) -> Option<u16> {
    let mut failures = shared.failures.lock().unwrap();
    let i = failures
        .iter()
        .position(|f| f.remaining > 0 && path.contains(&f.path_substring))?;
    failures[i].remaining -= 1;
    let status = failures[i].status;
    if failures[i].remaining == 0 {
        failures.remove(i);
    }
    Some(status)
}

/// The regular file under `root` that `path` names, refusing `..` and anything not a file.
fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    let decoded = percent_decode(path.strip_prefix('/')?)?;
    let relative = Path::new(&decoded);
    if !relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
    {
        return None;
    }
    let full = root.join(relative);
    full.is_file().then_some(full)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("xz") => "application/x-xz",
        Some("gz") => "application/gzip",
        Some("asc") | Some("gpg") => "application/pgp-signature",
        _ => "application/octet-stream",
    }
}

/// IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
fn http_date(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}
