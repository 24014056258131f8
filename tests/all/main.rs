mod check;

mod debian_semantics;
mod scan;
mod support;
mod support_selftest;
