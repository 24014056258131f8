mod check;

mod build;
mod debian_semantics;
mod examples;
mod forge_gitea;
mod forge_github;
mod forge_plain;
mod git;
mod image_tests;
mod propose;
mod publish;
mod render;
mod scan;
mod support;
mod support_selftest;
