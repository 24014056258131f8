//! rebake: rebuilds Debian-based container images when Debian fixes a package.
//!
//! One module per stage of the flow (see README): `debian` reads and verifies the archive,
//! `plan` decides which images need an update and why, later stages build on it.

pub mod attest;
pub mod automerge;
pub mod build;
pub mod check;
pub mod commands;
pub mod config;
pub mod cooldown;
pub mod dashboard;
pub mod debian;
pub mod deploy;
pub mod download;
pub mod engine;
pub mod forge;
pub mod forge_text;
/// The fuzz targets' logic (`fuzz/`, and the stable replay in `tests/all/fuzz_corpora.rs`).
#[doc(hidden)]
pub mod fuzzing;
pub mod git;
pub mod image_ref;
pub mod jobs;
pub mod lock;
pub mod manifests;
pub mod output;
pub mod pipeline;
pub mod plan;
pub mod policy;
pub mod propose;
pub mod publish;
pub mod redact;
pub mod render;
pub mod repo;
pub mod rollout;
pub mod sarif;
pub mod sbom;
pub mod security;
pub mod server;
pub mod signing;
pub mod state;
pub mod test;
pub mod timeline;
