//! The build stage (being split by job: see base.rs).

mod base;

pub use base::*;
