//! Shared test infrastructure: a real, signed Debian archive generated on the fly
//! ([`archive::TestArchive`]), an HTTP/1.1 file server that serves it and logs every request
//! ([`http::TestServer`]), and a sandboxed apt that reads it ([`apt::AptSandbox`]) so tests can
//! compare rebake's answers with apt's.
//!
//! Tools the helpers need (`gpg`, `gpgv`, `apt-get`, ...) are looked up with [`require_tool`],
//! which fails the test with the Debian package to install — a missing tool never makes a test
//! pass silently.

// Not every test uses every helper.
#![allow(dead_code, unused_imports)]

pub mod apt;
pub mod archive;
pub mod http;

pub use apt::{AptRun, AptSandbox};
pub use archive::{debian_date, dpkg_status, Pkg, StatusEntry, TestArchive};
pub use http::{Fault, Request, TestServer};

use std::path::{Path, PathBuf};

/// Absolute path of `tool` on `$PATH`, or a panic that says which Debian package provides it.
pub fn require_tool(tool: &str, package: &str) -> PathBuf {
    find_tool(tool).unwrap_or_else(|| {
        panic!("{tool} not found on PATH: apt-get install {package} (needed by this test)")
    })
}

/// Absolute path of `tool` on `$PATH`, if it is there.
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Lowercase hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// Lowercase hex MD5 of `data` (RFC 1321; Debian's `Release` still lists `MD5Sum:` and
/// `Packages` stanzas an `MD5sum:` field). Small local implementation: no md5 crate is a
/// dependency. The self-test checks it against `md5sum`.
pub fn md5_hex(data: &[u8]) -> String {
    const S: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5,
        9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10,
        15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    let k: Vec<u32> = (0..64)
        .map(|i| ((i as f64 + 1.0).sin().abs() * 4_294_967_296.0) as u32)
        .collect();
    let mut state: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

    let mut msg = data.to_vec();
    let bit_len = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_le_bytes());

    for block in msg.chunks_exact(64) {
        let m: Vec<u32> = block
            .chunks_exact(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        let [mut a, mut b, mut c, mut d] = state;
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let f = f.wrapping_add(a).wrapping_add(k[i]).wrapping_add(m[g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(f.rotate_left(S[i]));
        }
        state[0] = state[0].wrapping_add(a);
        state[1] = state[1].wrapping_add(b);
        state[2] = state[2].wrapping_add(c);
        state[3] = state[3].wrapping_add(d);
    }
    state.iter().map(|w| hex::encode(w.to_le_bytes())).collect()
}
pub mod engine;
pub mod fake_forge;
pub mod fake_gitea;
pub mod fake_github;
pub mod git_https;
pub mod gitops;
pub mod openapi;
pub mod registry;
pub mod second_engine;
pub mod sshd;
pub mod tiny_image;
