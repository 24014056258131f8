//! One lock per deploy target, `<state>/locks/<target>.lock`, held with `flock` (std's
//! `File::lock`) by a deploy and by a job of that target for as long as they run: a deploy waits
//! for a running job and a job for a running deploy, also between a `rebake serve` and a
//! `rebake deploy` or `rebake job run` in another process. The kernel drops the lock when the
//! holder exits, so a crash leaves nothing to clean up.

use anyhow::{Context, Result};
use std::fs::{File, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Sub-directory of the state directory with the lock files.
pub const LOCKS_DIR: &str = "locks";

/// A held target lock; released when dropped.
#[derive(Debug)]
pub struct TargetLock {
    file: File,
    /// How long acquiring it waited for another holder.
    pub waited: Duration,
}

/// The lock file of a target label (`docker:<name>`, `<host>/docker:<name>`).
pub fn lock_path(state_dir: &Path, target: &str) -> PathBuf {
    let name: String = target
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    state_dir.join(LOCKS_DIR).join(format!("{name}.lock"))
}

impl TargetLock {
    /// Takes the lock of `target`, waiting as long as another deploy or job holds it; `holder`
    /// (like `deploy postgres` or `job postgres/nightly-dump`) is written into the file so a
    /// waiter can say what it waits for. `on_wait` is called once with the current holder's
    /// description when the lock is taken.
    pub async fn acquire(
        state_dir: &Path,
        target: &str,
        holder: &str,
        on_wait: impl FnOnce(&str),
    ) -> Result<TargetLock> {
        let path = lock_path(state_dir, target);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open the lock file {}", path.display()))?;
        let started = Instant::now();
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut current = String::new();
                let _ = file.read_to_string(&mut current);
                let current = current.trim();
                on_wait(if current.is_empty() {
                    "another process"
                } else {
                    current
                });
                // flock blocks the thread: wait on a blocking thread, not the runtime's.
                file = tokio::task::spawn_blocking(move || file.lock().map(|()| file))
                    .await
                    .context("the lock waiter ended abnormally")?
                    .with_context(|| format!("cannot lock {}", path.display()))?;
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
        let waited = started.elapsed();
        file.set_len(0)?;
        file.rewind()?;
        writeln!(
            file,
            "{holder} (pid {}, since {})",
            std::process::id(),
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
        )?;
        file.flush()?;
        Ok(TargetLock { file, waited })
    }
}

impl Drop for TargetLock {
    fn drop(&mut self) {
        // Closing the file releases the lock; an empty file says nobody holds it.
        let _ = self.file.set_len(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_holder_waits_and_is_told_who_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let first = TargetLock::acquire(dir.path(), "docker:db", "deploy db", |_| {
            panic!("nobody holds it yet")
        })
        .await
        .unwrap();
        assert!(first.waited < Duration::from_millis(100));
        let state = dir.path().to_path_buf();
        let (told_tx, told_rx) = std::sync::mpsc::channel();
        let second = tokio::spawn(async move {
            TargetLock::acquire(&state, "docker:db", "job db/dump", move |who| {
                told_tx.send(who.to_string()).unwrap()
            })
            .await
            .unwrap()
        });
        let who = told_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(who.starts_with("deploy db (pid "), "{who}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!second.is_finished(), "the second holder did not wait");
        drop(first);
        let second = second.await.unwrap();
        assert!(
            second.waited >= Duration::from_millis(300),
            "{:?}",
            second.waited
        );
        let text = std::fs::read_to_string(lock_path(dir.path(), "docker:db")).unwrap();
        assert!(text.starts_with("job db/dump (pid "), "{text}");
        // Another target is another lock.
        TargetLock::acquire(dir.path(), "tcp://10.0.0.5:2376/docker:db", "x", |_| {
            panic!("another target's lock is free")
        })
        .await
        .unwrap();
    }
}
