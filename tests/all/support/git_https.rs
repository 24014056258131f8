//! A git server over HTTPS for tests: git's smart HTTP protocol served by Debian git's own
//! `git http-backend` (CGI) for every bare repository under a directory, on
//! `127.0.0.1:<free port>`, with TLS from a throw-away CA (made with the `openssl` CLI) and
//! HTTP Basic authentication by token, the way GitHub and Gitea take it:
//! user `x-access-token`, password the token.
//!
//! - Without credentials, or with wrong ones: `401` and `WWW-Authenticate: Basic realm="git"`
//!   (a client then asks its credential callback and retries).
//! - With the token: the request goes to `git http-backend` with `REMOTE_USER` set, which is
//!   what lets it run `receive-pack` (pushes).
//! - Every request is logged — method, path, query, status, and whether its credentials were
//!   missing, wrong or right — before the answer is sent ([`GitHttpsServer::requests`]).
//! - The server's certificate names `IP:127.0.0.1`; a client trusts it through
//!   [`GitHttpsServer::ca_file`] (e.g. `SSL_CERT_FILE`), not otherwise.
//!
//! Threads on `std::net`, TLS through `native-tls` (OpenSSL), HTTP/1.1 with keep-alive and
//! chunked request bodies (libgit2 sends pushes chunked). Stops when dropped.
//!
//! [`GitHttpsServer::tls_proxy`] puts the same certificate in front of a plain-HTTP server (a
//! forge fake), so one private CA covers both the git remote and the forge's API.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;

use super::require_tool;

/// The user name a token is sent with.
pub const TOKEN_USER: &str = "x-access-token";
/// An idle keep-alive connection is closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_HEAD: usize = 64 * 1024;

/// What a request's `Authorization` header held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credentials {
    Missing,
    Wrong,
    Right,
}

/// One logged request.
#[derive(Clone, Debug)]
pub struct GitRequest {
    pub method: String,
    /// Path as sent, without the query.
    pub path: String,
    pub query: String,
    pub status: u16,
    pub credentials: Credentials,
}

impl GitRequest {
    /// Whether this request uploaded a push (`POST …/git-receive-pack`).
    pub fn is_push(&self) -> bool {
        self.method == "POST" && self.path.ends_with("/git-receive-pack")
    }
}

struct Shared {
    root: PathBuf,
    git: PathBuf,
    token: Mutex<String>,
    log: Mutex<Vec<GitRequest>>,
    stop: AtomicBool,
    /// The raw TCP side of every open connection, to shut them down on drop.
    open: Mutex<Vec<TcpStream>>,
}

pub struct GitHttpsServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<std::thread::JoinHandle<()>>,
    tls: tempfile::TempDir,
}

impl GitHttpsServer {
    /// Serves the bare repositories under `root` (`https://127.0.0.1:PORT/<name>.git` is
    /// `root/<name>.git`), accepting `token`.
    pub fn start(root: &Path, token: &str) -> GitHttpsServer {
        let git = require_tool("git", "git");
        let tls = tempfile::tempdir().expect("temp dir for the TLS files");
        let (cert, key) = make_certificates(tls.path());
        let identity = native_tls::Identity::from_pkcs8(&cert, &key)
            .expect("the test server's certificate and key load");
        let acceptor = Arc::new(
            native_tls::TlsAcceptor::new(identity).expect("a TLS acceptor for the git server"),
        );
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            root: root.to_path_buf(),
            git,
            token: Mutex::new(token.to_string()),
            log: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            open: Mutex::new(Vec::new()),
        });
        let accept_shared = Arc::clone(&shared);
        let accept = std::thread::Builder::new()
            .name(format!("git-https-{}", addr.port()))
            .spawn(move || {
                for stream in listener.incoming() {
                    if accept_shared.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    if let Ok(raw) = stream.try_clone() {
                        accept_shared.open.lock().unwrap().push(raw);
                    }
                    let (shared, acceptor) = (Arc::clone(&accept_shared), Arc::clone(&acceptor));
                    let _ = std::thread::Builder::new()
                        .name("git-https-conn".into())
                        .spawn(move || {
                            let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
                            // A client that refuses the certificate ends the handshake: fine.
                            if let Ok(tls) = acceptor.accept(stream) {
                                serve_connection(tls, &shared);
                            }
                        });
                }
            })
            .expect("spawn the accept thread");
        GitHttpsServer {
            addr,
            shared,
            accept: Some(accept),
            tls,
        }
    }

    /// `https://127.0.0.1:PORT/<path>` (`path` relative to the served directory).
    pub fn url(&self, path: &str) -> String {
        format!("https://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    /// The throw-away CA's certificate (PEM): what a client must trust.
    pub fn ca_file(&self) -> PathBuf {
        self.tls.path().join("ca.pem")
    }

    /// From now on, only `token` is accepted.
    pub fn set_token(&self, token: &str) {
        *self.shared.token.lock().unwrap() = token.to_string();
    }

    pub fn requests(&self) -> Vec<GitRequest> {
        self.shared.log.lock().unwrap().clone()
    }

    /// An HTTPS front, with this server's certificate (same CA), for the plain-HTTP server at
    /// `backend` (`http://127.0.0.1:PORT`, e.g. a forge fake): each request is relayed as is
    /// and its answer returned, then the connection is closed.
    pub fn tls_proxy(&self, backend: &str) -> TlsProxy {
        let backend: SocketAddr = backend
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .expect("backend is http://IP:PORT");
        let cert = std::fs::read(self.tls.path().join("server.pem")).unwrap();
        let key = std::fs::read(self.tls.path().join("server.key")).unwrap();
        let identity = native_tls::Identity::from_pkcs8(&cert, &key).unwrap();
        let acceptor = Arc::new(native_tls::TlsAcceptor::new(identity).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let relayed = Arc::new(Mutex::new(0usize));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopped) = (Arc::clone(&relayed), Arc::clone(&stop));
        let accept = std::thread::Builder::new()
            .name(format!("tls-proxy-{}", addr.port()))
            .spawn(move || {
                for stream in listener.incoming() {
                    if stopped.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (acceptor, count) = (Arc::clone(&acceptor), Arc::clone(&count));
                    let _ = std::thread::Builder::new()
                        .name("tls-proxy-conn".into())
                        .spawn(move || {
                            let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
                            if let Ok(tls) = acceptor.accept(stream) {
                                if relay(tls, backend).is_ok() {
                                    *count.lock().unwrap() += 1;
                                }
                            }
                        });
                }
            })
            .expect("spawn the proxy's accept thread");
        TlsProxy {
            addr,
            relayed,
            stop,
            accept: Some(accept),
        }
    }
}

/// See [`GitHttpsServer::tls_proxy`].
pub struct TlsProxy {
    addr: SocketAddr,
    relayed: Arc<Mutex<usize>>,
    stop: Arc<AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl TlsProxy {
    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// How many requests were relayed and answered.
    pub fn relayed(&self) -> usize {
        *self.relayed.lock().unwrap()
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// One request from `client` to `backend` (with `Connection: close`), its answer back verbatim.
fn relay<S: Read + Write>(client: S, backend: SocketAddr) -> std::io::Result<()> {
    let mut reader = BufReader::new(client);
    let Some(request) = read_request(&mut reader)? else {
        return Ok(());
    };
    let mut head = format!("{} {} HTTP/1.1\r\n", request.method, request.target);
    for (name, value) in &request.headers {
        let hop = [
            "connection",
            "transfer-encoding",
            "content-length",
            "keep-alive",
        ];
        if !hop.contains(&name.to_ascii_lowercase().as_str()) {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        request.body.len()
    ));
    let mut upstream = TcpStream::connect(backend)?;
    upstream.write_all(head.as_bytes())?;
    upstream.write_all(&request.body)?;
    let mut answer = Vec::new();
    upstream.read_to_end(&mut answer)?;
    let client = reader.get_mut();
    client.write_all(&answer)?;
    client.flush()
}

impl Drop for GitHttpsServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        for stream in self.shared.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// A CA and a server certificate for `IP:127.0.0.1` signed by it, in `dir` (`ca.pem`,
/// `server.pem`, `server.key`). Returns the server's certificate and key (PEM, PKCS#8).
fn make_certificates(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let openssl = require_tool("openssl", "openssl");
    let run = |args: &[&str]| {
        let out = Command::new(&openssl)
            .current_dir(dir)
            .args(args)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    run(&[
        &["req", "-x509", "-nodes", "-days", "2"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=rebake test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    ]
    .concat());
    run(&[
        &["req", "-nodes"][..],
        &ec,
        &[
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\n\
         subjectAltName=IP:127.0.0.1\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-set_serial",
        "4242",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    ]);
    (
        std::fs::read(dir.join("server.pem")).unwrap(),
        std::fs::read(dir.join("server.key")).unwrap(),
    )
}

/// One parsed request.
struct Incoming {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Incoming {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn serve_connection<S: Read + Write>(stream: S, shared: &Shared) {
    let mut reader = BufReader::new(stream);
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let request = match read_request(&mut reader) {
            Ok(Some(request)) => request,
            Ok(None) | Err(_) => return,
        };
        let close = request
            .header("Connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let (status, headers, body) = answer(&request, shared);
        let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
        for (name, value) in &headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        if close {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        let stream = reader.get_mut();
        if stream.write_all(head.as_bytes()).is_err()
            || stream.write_all(&body).is_err()
            || stream.flush().is_err()
            || close
        {
            return;
        }
    }
}

/// Reads one request; `None` when the client closed the connection between requests.
fn read_request<S: Read + Write>(reader: &mut BufReader<S>) -> std::io::Result<Option<Incoming>> {
    let mut lines = Vec::new();
    let mut size = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            if lines.is_empty() {
                return Ok(None);
            }
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        size += line.len();
        if size > MAX_HEAD {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            if lines.is_empty() {
                continue; // stray CRLF between requests
            }
            break;
        }
        lines.push(line);
    }
    let mut request_line = lines[0].split_whitespace();
    let method = request_line.next().unwrap_or_default().to_string();
    let target = request_line.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines[1..]
        .iter()
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut request = Incoming {
        method,
        target,
        headers,
        body: Vec::new(),
    };
    if request
        .header("Expect")
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    {
        reader
            .get_mut()
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        reader.get_mut().flush()?;
    }
    if request
        .header("Transfer-Encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut size_line = String::new();
            reader.read_line(&mut size_line)?;
            let hex = size_line.trim().split(';').next().unwrap_or_default();
            let size = usize::from_str_radix(hex, 16)
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidData))?;
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    let mut trailer = String::new();
                    if reader.read_line(&mut trailer)? == 0 || trailer.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            let start = request.body.len();
            request.body.resize(start + size, 0);
            reader.read_exact(&mut request.body[start..])?;
            let mut crlf = [0u8; 2];
            reader.read_exact(&mut crlf)?;
        }
    } else if let Some(length) = request.header("Content-Length") {
        let length: usize = length
            .parse()
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidData))?;
        request.body.resize(length, 0);
        reader.read_exact(&mut request.body)?;
    }
    Ok(Some(request))
}

type Answer = (u16, Vec<(String, String)>, Vec<u8>);

fn answer(request: &Incoming, shared: &Shared) -> Answer {
    let (path, query) = match request.target.split_once('?') {
        Some((path, query)) => (path.to_string(), query.to_string()),
        None => (request.target.clone(), String::new()),
    };
    let credentials = check_credentials(request.header("Authorization"), shared);
    let (status, headers, body) = if credentials != Credentials::Right {
        (
            401,
            vec![(
                "WWW-Authenticate".to_string(),
                "Basic realm=\"git\"".to_string(),
            )],
            b"authentication required\n".to_vec(),
        )
    } else if path.split('/').any(|c| c == "..") {
        (400, Vec::new(), b"bad path\n".to_vec())
    } else {
        http_backend(request, &path, &query, shared)
    };
    shared.log.lock().unwrap().push(GitRequest {
        method: request.method.clone(),
        path,
        query,
        status,
        credentials,
    });
    (status, headers, body)
}

fn check_credentials(authorization: Option<&str>, shared: &Shared) -> Credentials {
    let Some(value) = authorization else {
        return Credentials::Missing;
    };
    let decoded = value
        .strip_prefix("Basic ")
        .and_then(|b64| {
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .ok()
        })
        .and_then(|bytes| String::from_utf8(bytes).ok());
    let expected = format!("{TOKEN_USER}:{}", shared.token.lock().unwrap());
    if decoded.as_deref() == Some(expected.as_str()) {
        Credentials::Right
    } else {
        Credentials::Wrong
    }
}

/// Runs `git http-backend` for one request (CGI/1.1: the request in the environment, the body
/// on stdin, headers and body on stdout).
fn http_backend(request: &Incoming, path: &str, query: &str, shared: &Shared) -> Answer {
    let mut cmd = Command::new(&shared.git);
    cmd.arg("http-backend")
        .env("GIT_PROJECT_ROOT", &shared.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", path)
        .env("REQUEST_METHOD", &request.method)
        .env("QUERY_STRING", query)
        .env("REMOTE_USER", TOKEN_USER)
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("CONTENT_LENGTH", request.body.len().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (variable, header) in [
        ("CONTENT_TYPE", "Content-Type"),
        ("HTTP_CONTENT_ENCODING", "Content-Encoding"),
        ("GIT_PROTOCOL", "Git-Protocol"),
    ] {
        if let Some(value) = request.header(header) {
            cmd.env(variable, value);
        }
    }
    let mut child = cmd.spawn().expect("run git http-backend");
    let mut stdin = child.stdin.take().unwrap();
    let body = request.body.clone();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&body);
    });
    let out = child.wait_with_output().expect("git http-backend output");
    let _ = writer.join();
    let stdout = out.stdout;
    let split = find(&stdout, b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| find(&stdout, b"\n\n").map(|i| (i, 2)));
    let Some((end, gap)) = split else {
        return (
            500,
            Vec::new(),
            format!(
                "git http-backend gave no CGI headers; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into_bytes(),
        );
    };
    let mut status = 200;
    let mut headers = Vec::new();
    for line in String::from_utf8_lossy(&stdout[..end]).lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("Status") {
            status = value
                .split_whitespace()
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(500);
        } else if !name.eq_ignore_ascii_case("Content-Length") {
            headers.push((name.to_string(), value.to_string()));
        }
    }
    (status, headers, stdout[end + gap..].to_vec())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        _ => "Status",
    }
}
