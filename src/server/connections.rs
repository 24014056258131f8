//! The service's HTTP connections, bounded: HTTP/1.1 through hyper's own connection builder
//! (instead of `axum::serve`, which sets no header-read timeout), with
//!
//! - a header-read timeout: a connection that has not sent a whole request head that long
//!   after it opened, or after its last answer (an idle keep-alive), is closed;
//! - a whole-request timeout (see [`super::Service::router`]): a request whose body is not in
//!   and answered by then gets 408;
//! - a cap on open connections: at the cap, a new connection makes room by closing the oldest
//!   one that has no request in progress (idle, or still sending its head), so that idle or
//!   slow clients cannot lock out a webhook; when every connection has a request in progress
//!   the new one is closed. Either is logged, at most one line per [`WARN_EVERY`].
//!
//! [`raise_open_files_limit`] lifts the process's soft `RLIMIT_NOFILE` to its hard limit.

use anyhow::Result;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt;
use tracing::{debug, info, warn};

/// How the service bounds its connections ([`super::ServeConfig::limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// The longest a connection may take to send a request head (from its opening, or from
    /// the previous answer on a kept-alive connection).
    pub header_read_timeout: Duration,
    /// The longest a request may take from its head to its answer (body included).
    pub request_timeout: Duration,
    /// The most connections open at once.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 512,
        }
    }
}

/// At most one log line per this long about the connection cap or failed accepts.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

struct Conn {
    /// Requests in progress on it.
    busy: Arc<AtomicUsize>,
    /// Closes it.
    close: oneshot::Sender<()>,
}

/// The open connections, oldest first (ids only grow).
#[derive(Default)]
struct Conns {
    next_id: u64,
    open: BTreeMap<u64, Conn>,
}

/// Counts what happened at the cap, and says so at most once per [`WARN_EVERY`].
struct CapLog {
    max: usize,
    last: Option<Instant>,
    closed: u64,
    refused: u64,
    accept_errors: u64,
    last_error: String,
}

impl CapLog {
    fn flush_if_due(&mut self) {
        if self.closed + self.refused + self.accept_errors == 0 {
            return;
        }
        if self.last.is_some_and(|t| t.elapsed() < WARN_EVERY) {
            return;
        }
        if self.closed + self.refused > 0 {
            warn!(
                "connection limit ({}) reached: closed {} idle connection(s) to make room and \
                 refused {} new one(s) while every connection had a request in progress{}",
                self.max,
                self.closed,
                self.refused,
                if self.last.is_some() {
                    format!(" (in the last {} s)", WARN_EVERY.as_secs())
                } else {
                    String::new()
                }
            );
        }
        if self.accept_errors > 0 {
            warn!(
                "cannot accept {} connection(s): {} (is the open files limit too low?)",
                self.accept_errors, self.last_error
            );
        }
        self.last = Some(Instant::now());
        self.closed = 0;
        self.refused = 0;
        self.accept_errors = 0;
    }
}

/// Decrements a connection's busy count when its request is answered (or dropped).
struct Busy(Arc<AtomicUsize>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Removes a connection from the open ones when its task ends.
struct Registered {
    conns: Arc<Mutex<Conns>>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        super::lock(&self.conns).open.remove(&self.id);
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown` completes; then stops
/// accepting, lets requests in progress finish (at most `request_timeout`) and returns.
pub async fn serve_bounded(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let mut shutdown = std::pin::pin!(shutdown);
    let conns: Arc<Mutex<Conns>> = Arc::default();
    let (closing, _) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut log = CapLog {
        max: limits.max_connections,
        last: None,
        closed: 0,
        refused: 0,
        accept_errors: 0,
        last_error: String::new(),
    };
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, mostly: wait a little for some to be freed.
                    log.accept_errors += 1;
                    log.last_error = e.to_string();
                    log.flush_if_due();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (close, closed) = oneshot::channel();
        let busy = Arc::new(AtomicUsize::new(0));
        let id = {
            let mut open = super::lock(&conns);
            if open.open.len() >= limits.max_connections {
                let oldest_idle = open
                    .open
                    .iter()
                    .find(|(_, c)| c.busy.load(Ordering::SeqCst) == 0)
                    .map(|(id, _)| *id);
                match oldest_idle.and_then(|id| open.open.remove(&id)) {
                    Some(victim) => {
                        let _ = victim.close.send(());
                        log.closed += 1;
                    }
                    None => {
                        log.refused += 1;
                        drop(open);
                        drop(stream);
                        log.flush_if_due();
                        continue;
                    }
                }
            }
            let id = open.next_id;
            open.next_id += 1;
            open.open.insert(
                id,
                Conn {
                    busy: busy.clone(),
                    close,
                },
            );
            id
        };
        log.flush_if_due();
        let registered = Registered {
            conns: conns.clone(),
            id,
        };
        tasks.spawn(serve_connection(
            stream,
            router.clone(),
            limits,
            busy,
            closed,
            closing.subscribe(),
            registered,
        ));
    }
    drop(listener);
    closing.send_replace(true);
    let open = tasks.len();
    if open > 0 {
        info!("waiting for {open} open connection(s) to finish their requests");
    }
    let drained = tokio::time::timeout(limits.request_timeout, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tasks.abort_all();
    }
    Ok(())
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    router: Router,
    limits: ConnectionLimits,
    busy: Arc<AtomicUsize>,
    closed: oneshot::Receiver<()>,
    mut closing: watch::Receiver<bool>,
    _registered: Registered,
) {
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        busy.fetch_add(1, Ordering::SeqCst);
        let guard = Busy(busy.clone());
        let router = router.clone();
        async move {
            let _guard = guard;
            router.oneshot(request).await
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        served = connection.as_mut() => {
            if let Err(e) = served {
                debug!("connection ended: {e}");
            }
        }
        _ = closed => debug!("connection closed to make room for a new one"),
        _ = async { closing.wait_for(|c| *c).await.map(|_| ()) } => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// Raises the soft limit on open files (`RLIMIT_NOFILE`) to the hard limit: the old and the
/// new soft limit.
pub fn raise_open_files_limit() -> std::io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given, which lives on this stack frame.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let old = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    // rlim_t is u64 on Linux, narrower on some other systems.
    #[allow(clippy::unnecessary_cast)]
    Ok((old as u64, limit.rlim_cur as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Collects what is logged.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_cap_is_logged_at_once_then_at_most_every_ten_seconds() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let lines = || {
            String::from_utf8(captured.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        tracing::subscriber::with_default(subscriber, || {
            let mut log = CapLog {
                max: 512,
                last: None,
                closed: 0,
                refused: 0,
                accept_errors: 0,
                last_error: String::new(),
            };
            log.flush_if_due();
            assert!(lines().is_empty(), "nothing happened: nothing logged");
            log.closed += 1;
            log.flush_if_due();
            assert_eq!(lines().len(), 1, "{:?}", lines());
            assert!(
                lines()[0].contains("connection limit (512) reached: closed 1 idle connection(s)"),
                "{:?}",
                lines()
            );
            // Within the next 10 s: counted, not logged.
            for _ in 0..1000 {
                log.closed += 1;
                log.refused += 1;
                log.flush_if_due();
            }
            assert_eq!(lines().len(), 1, "{:?}", lines());
            // Once 10 s have passed, one line says how many.
            log.last = Some(Instant::now() - WARN_EVERY);
            log.flush_if_due();
            assert_eq!(lines().len(), 2, "{:?}", lines());
            assert!(
                lines()[1].contains("closed 1000 idle connection(s) to make room and refused 1000"),
                "{:?}",
                lines()
            );
        });
    }
}
