//! The state directory (`$XDG_STATE_HOME/rebake` by default): verified InRelease files, the
//! last `Date` seen per suite, and parsed indices keyed by their SHA256.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// The default state directory: `$XDG_STATE_HOME/rebake`, else `~/.local/state/rebake`.
pub fn default_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("rebake");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".local/state/rebake")
}

/// Writes a file atomically (temp file + rename), so a crash never leaves half a file that a
/// later run would trust.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    std::io::Write::write_all(&mut tmp, bytes)?;
    tmp.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// The lowercase hex SHA-256 of `bytes`: how rebake names cached indices, rootfs tarballs and
/// its inputs label.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
