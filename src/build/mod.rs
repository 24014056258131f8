//! The build stage: a reproducible Debian base image made from verified packages
//! ([`build_base`]), the image a policy's Dockerfile describes ([`build_image`]), and what is
//! installed in it ([`inventory`]). Everything goes through the Docker Engine API (bollard).
//!
//! The base is built like debuerreotype builds Debian's official images: mmdebstrap with
//! `SOURCE_DATE_EPOCH` from the archive's InRelease `Date`, then the tarball is re-written
//! (sorted, mtimes clamped, numeric owners, logs/caches/apt lists/machine-id emptied). Its
//! SHA256 is the base's identity. It is loaded into the engine as a `docker save` archive whose
//! image config rebake writes itself (`created` = the epoch), so the same rootfs always gets the
//! same image id — `docker import` would stamp the import time instead.
//!
//! The image built on the base is made reproducible the same way: exported, each layer above
//! the base re-written like the rootfs (sorted, mtimes clamped, run-dependent files dropped),
//! its config written without times or container ids, and loaded again (`reproducible`).
//!
//! `base` builds the base, `rootfs` re-writes its tarball and the image's layers,
//! `reproducible` re-writes and reloads a built image, `image` builds a policy's image and
//! reads its inventory; their public items are re-exported here.

mod base;
mod image;
mod reproducible;
mod rootfs;

use crate::state::sha256_hex;
pub use base::{build_base, BaseImage, BASE_PATH, BASE_REPO};
pub use image::{
    build_image, build_image_with, candidate_tag, context_tar, inventory, read_changelogs,
    read_container_dir, read_container_files, read_files,
};
pub use reproducible::Reproducible;

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
