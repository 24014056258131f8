//! Debian's archive: formats (deb822, Packages, dpkg status), dpkg version order, signed
//! `InRelease` verification, fetching with caching, and apt's candidate choice.

pub mod archive;
pub mod candidate;
pub mod changelog;
pub mod deb822;
pub mod index;
pub mod packages;
pub mod release;
pub mod sources;
pub mod status;
pub mod verify;
pub mod version;
