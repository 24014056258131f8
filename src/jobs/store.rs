//! Backup stores (`backups:` in rebake.yaml): dumps kept outside the container, each as
//! `<store>/<image>/<job>/<timestamp>.dump` with `<timestamp>.dump.sha256` beside it in
//! `sha256sum` format (so `sha256sum -c` checks it too), pruned after each new dump.

use anyhow::{anyhow, bail, Context, Result};
use sha2::Digest;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::config::{BackupLocation, BackupStore};

/// Suffix of a dump file.
pub const DUMP_SUFFIX: &str = ".dump";
/// Suffix of the checksum file beside a dump.
pub const SHA256_SUFFIX: &str = ".sha256";

/// The directory a store keeps `image`'s `job` dumps in. A volume store is the volume's mount
/// point on the engine's machine (the volume is created when missing).
pub async fn dump_dir(
    docker: &bollard::Docker,
    store_name: &str,
    store: &BackupStore,
    image: &str,
    job: &str,
) -> Result<PathBuf> {
    let root = match &store.location {
        BackupLocation::Dir(dir) => dir.clone(),
        BackupLocation::Volume(volume) => {
            let found = match docker.inspect_volume(volume).await {
                Ok(v) => v,
                Err(e) if crate::engine::is_not_found(&e) => docker
                    .create_volume(bollard::models::VolumeCreateRequest {
                        name: Some(volume.clone()),
                        ..Default::default()
                    })
                    .await
                    .with_context(|| format!("cannot create the backup volume {volume}"))?,
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot inspect the volume {volume}"))
                }
            };
            let mountpoint = PathBuf::from(&found.mountpoint);
            if found.driver != "local" || !mountpoint.is_dir() {
                bail!(
                    "backup store '{store_name}': the volume {volume} (driver {}) is not a \
                     directory on this machine ({}): rebake writes a volume store through its \
                     mount point, so it must run on the engine's machine with access to it; \
                     use 'dir:' otherwise",
                    found.driver,
                    mountpoint.display()
                );
            }
            mountpoint
        }
    };
    Ok(root.join(image).join(job))
}

/// A dump being written: its bytes are hashed as they come.
pub struct DumpWriter {
    file: std::fs::File,
    hasher: sha2::Sha256,
    bytes: u64,
    /// The final path; written under a temporary name until [`DumpWriter::finish`].
    path: PathBuf,
    partial: PathBuf,
}

/// A stored dump.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredDump {
    pub path: PathBuf,
    pub sha256: String,
    pub bytes: u64,
}

impl DumpWriter {
    /// A new dump in `dir` named after `timestamp` (`20261129T223000.123Z`).
    pub fn create(dir: &Path, timestamp: &str) -> Result<DumpWriter> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(format!("{timestamp}{DUMP_SUFFIX}"));
        let partial = dir.join(format!(".{timestamp}{DUMP_SUFFIX}.partial"));
        let file = std::fs::File::create(&partial)
            .with_context(|| format!("cannot create {}", partial.display()))?;
        Ok(DumpWriter {
            file,
            hasher: sha2::Sha256::new(),
            bytes: 0,
            path,
            partial,
        })
    }

    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        self.hasher.update(data);
        self.bytes += data.len() as u64;
        self.file
            .write_all(data)
            .with_context(|| format!("cannot write {}", self.partial.display()))
    }

    /// Syncs the dump, writes its `.sha256` and gives it its final name: a dump that has a
    /// name is complete.
    pub fn finish(self) -> Result<StoredDump> {
        self.file.sync_all()?;
        let sha256 = hex::encode(self.hasher.finalize());
        let file_name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        crate::state::write_atomic(
            &sha256_path(&self.path),
            format!("{sha256}  {file_name}\n").as_bytes(),
        )?;
        std::fs::rename(&self.partial, &self.path)
            .with_context(|| format!("cannot rename to {}", self.path.display()))?;
        Ok(StoredDump {
            path: self.path,
            sha256,
            bytes: self.bytes,
        })
    }
}

fn sha256_path(dump: &Path) -> PathBuf {
    let mut name = dump.as_os_str().to_owned();
    name.push(SHA256_SUFFIX);
    PathBuf::from(name)
}

/// The complete dumps in `dir`, oldest first (their names are UTC timestamps).
pub fn list_dumps(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    let mut dumps: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(DUMP_SUFFIX) && !n.starts_with('.'))
        })
        .collect();
    dumps.sort();
    Ok(dumps)
}

/// Checks a dump against the SHA256 in the `.sha256` beside it.
pub fn verify(dump: &Path) -> Result<StoredDump> {
    let sums = sha256_path(dump);
    let text = std::fs::read_to_string(&sums).with_context(|| {
        format!(
            "{} has no checksum file {}: it cannot be shown to be the dump that was written",
            dump.display(),
            sums.display()
        )
    })?;
    let expected = text
        .split_whitespace()
        .next()
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| anyhow!("{} does not start with a SHA256", sums.display()))?
        .to_ascii_lowercase();
    let mut file =
        std::fs::File::open(dump).with_context(|| format!("cannot open {}", dump.display()))?;
    let mut hasher = sha2::Sha256::new();
    let bytes = std::io::copy(&mut file, &mut hasher)?;
    let actual = hex::encode(hasher.finalize());
    if actual != expected {
        bail!(
            "{} has SHA256 {actual}, but {} records {expected}: the dump changed after it was \
             written; it is not restored",
            dump.display(),
            sums.display()
        );
    }
    Ok(StoredDump {
        path: dump.to_path_buf(),
        sha256: actual,
        bytes,
    })
}

/// Removes the dumps (and their checksums) beyond the store's `keep_last` newest and those
/// older than `keep_for`; the newest dump always stays. The removed paths.
pub fn prune(dir: &Path, store: &BackupStore, now: SystemTime) -> Result<Vec<PathBuf>> {
    let dumps = list_dumps(dir)?;
    let mut removed = Vec::new();
    let count = dumps.len();
    for (i, dump) in dumps.iter().enumerate() {
        let newer = count - 1 - i;
        if newer == 0 {
            break;
        }
        let beyond_count = store.keep_last.is_some_and(|n| newer >= n as usize);
        let too_old = store.keep_for.is_some_and(|age| {
            std::fs::metadata(dump)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|a| a > age)
        });
        if beyond_count || too_old {
            std::fs::remove_file(dump)
                .with_context(|| format!("cannot remove {}", dump.display()))?;
            let _ = std::fs::remove_file(sha256_path(dump));
            removed.push(dump.clone());
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn store(keep_last: Option<u32>, keep_for: Option<Duration>) -> BackupStore {
        BackupStore {
            location: BackupLocation::Dir(PathBuf::from("/unused")),
            keep_last,
            keep_for,
        }
    }

    fn dump(dir: &Path, timestamp: &str, text: &str) -> StoredDump {
        let mut w = DumpWriter::create(dir, timestamp).unwrap();
        w.write(text.as_bytes()).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn a_dump_has_its_sha256_beside_it_and_a_changed_dump_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dump(dir.path(), "20261129T020000.000Z", "select 1;\n");
        assert_eq!(d.sha256, crate::state::sha256_hex(b"select 1;\n"));
        assert_eq!(d.bytes, 10);
        let sums =
            std::fs::read_to_string(dir.path().join("20261129T020000.000Z.dump.sha256")).unwrap();
        assert_eq!(sums, format!("{}  20261129T020000.000Z.dump\n", d.sha256));
        assert_eq!(verify(&d.path).unwrap(), d);
        std::fs::write(&d.path, "drop table t;\n").unwrap();
        let e = verify(&d.path).unwrap_err().to_string();
        assert!(e.contains("the dump changed after it was written"), "{e}");
        std::fs::remove_file(dir.path().join("20261129T020000.000Z.dump.sha256")).unwrap();
        let e = verify(&d.path).unwrap_err().to_string();
        assert!(e.contains("has no checksum file"), "{e}");
    }

    #[test]
    fn pruning_keeps_the_last_n_and_the_young_and_always_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        for day in 1..=5 {
            dump(dir.path(), &format!("2026110{day}T020000.000Z"), "x");
        }
        // A partial dump of a failed run is not a dump.
        std::fs::write(dir.path().join(".20261106T020000.000Z.dump.partial"), "x").unwrap();
        let removed = prune(dir.path(), &store(Some(3), None), SystemTime::now()).unwrap();
        assert_eq!(removed.len(), 2);
        let left: Vec<String> = list_dumps(dir.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            left,
            [
                "20261103T020000.000Z.dump",
                "20261104T020000.000Z.dump",
                "20261105T020000.000Z.dump"
            ]
        );
        assert!(!dir.path().join("20261101T020000.000Z.dump.sha256").exists());
        // By age: everything is older than a second in a day's time, but the newest stays.
        let later = SystemTime::now() + Duration::from_secs(86_400);
        let removed = prune(
            dir.path(),
            &store(None, Some(Duration::from_secs(1))),
            later,
        )
        .unwrap();
        assert_eq!(removed.len(), 2);
        assert_eq!(list_dumps(dir.path()).unwrap().len(), 1);
        // Without limits nothing goes.
        dump(dir.path(), "20261107T020000.000Z", "x");
        assert!(prune(dir.path(), &store(None, None), later)
            .unwrap()
            .is_empty());
    }
}
