//! Deploy manifests in the GitOps repository (compose files, swarm stacks, Kubernetes, Argo CD
//! or Flux sources): their `image:` fields are rewritten to the tested digest inside the proposal
//! commit, so a GitOps engine deploys what was tested when the proposal is merged.

use crate::image_ref::{image_repository, normalized_repository};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// Rewrites, in the files `paths` (relative to `repo`; a directory stands for its `*.yaml` and
/// `*.yml` files, recursively), every `image:` field whose repository is `repo_at_digest`'s
/// (any tag or digest, Docker Hub short names normalized) to `repo_at_digest`. Line by line:
/// quotes, comments, indentation and line endings are kept, nothing else in the file changes.
/// Returns the files that changed (relative to `repo`, sorted). `image_name` (the policy's
/// name) is for messages.
pub fn rewrite_manifests(
    repo: &Path,
    paths: &[PathBuf],
    image_name: &str,
    repo_at_digest: &str,
) -> Result<Vec<PathBuf>> {
    let Some((repository, digest)) = repo_at_digest.split_once('@') else {
        bail!("image {image_name}: {repo_at_digest:?} is not a repo@sha256:… reference");
    };
    if !digest.starts_with("sha256:") || image_repository(repository) != repository {
        bail!("image {image_name}: {repo_at_digest:?} is not a repo@sha256:… reference");
    }
    let wanted = normalized_repository(repository);
    let mut files = Vec::new();
    for path in paths {
        collect_manifest_files(repo, path, &mut files)
            .with_context(|| format!("image {image_name}: manifests: {}", path.display()))?;
    }
    files.sort();
    files.dedup();
    let mut changed = Vec::new();
    for file in files {
        let full = repo.join(&file);
        // Never through a link: the rewrite would write wherever it points.
        let text = crate::config::input::read_input(Some(repo), &full).with_context(|| {
            format!(
                "image {image_name}: cannot read the manifest {}",
                full.display()
            )
        })?;
        let rewritten = rewrite_image_lines(&text, &wanted, repo_at_digest);
        if rewritten != text {
            std::fs::write(&full, rewritten).with_context(|| {
                format!(
                    "image {image_name}: cannot write the manifest {}",
                    full.display()
                )
            })?;
            changed.push(file);
        }
    }
    Ok(changed)
}

fn collect_manifest_files(repo: &Path, path: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    let full = repo.join(path);
    let meta = std::fs::metadata(&full).with_context(|| format!("{}", full.display()))?;
    if meta.is_file() {
        files.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<_> = std::fs::read_dir(&full)
        .with_context(|| format!("{}", full.display()))?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    entries.sort();
    for entry in entries {
        let child = path.join(&entry);
        let name = entry.to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        if repo.join(&child).is_dir() {
            collect_manifest_files(repo, &child, files)?;
        } else if name.ends_with(".yaml") || name.ends_with(".yml") {
            files.push(child);
        }
    }
    Ok(())
}

/// The text with every `image:` value of the repository `wanted` (normalized) replaced.
fn rewrite_image_lines(text: &str, wanted: &str, new_ref: &str) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.split_inclusive('\n') {
        match rewrite_image_line(line, wanted, new_ref) {
            Some(new_line) => out.push_str(&new_line),
            None => out.push_str(line),
        }
    }
    out
}

/// The line rewritten, when it is an `image:` field of the wanted repository.
fn rewrite_image_line(line: &str, wanted: &str, new_ref: &str) -> Option<String> {
    let (body, ending) = match line.strip_suffix("\r\n") {
        Some(body) => (body, "\r\n"),
        None => match line.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (line, ""),
        },
    };
    // Indentation and list markers: `  - image: x`, `- - image: x`.
    let mut key_start = 0;
    let bytes = body.as_bytes();
    loop {
        while key_start < bytes.len() && bytes[key_start] == b' ' {
            key_start += 1;
        }
        if body[key_start..].starts_with("- ") {
            key_start += 2;
        } else {
            break;
        }
    }
    let rest = &body[key_start..];
    let after_key = ["image:", "\"image\":", "'image':"]
        .iter()
        .find_map(|key| rest.strip_prefix(key))?;
    let value_start = key_start + (rest.len() - after_key.len());
    let leading_spaces = after_key.len() - after_key.trim_start_matches([' ', '\t']).len();
    if leading_spaces == 0 && !after_key.is_empty() {
        return None;
    }
    let value_start = value_start + leading_spaces;
    let value_part = &body[value_start..];
    let (quote, value, value_end) = match value_part.chars().next() {
        Some(q @ ('"' | '\'')) => {
            let close = value_part[1..].find(q)? + 1;
            (Some(q), &value_part[1..close], value_start + close + 1)
        }
        _ => {
            // Plain scalar: up to a comment (` #`) or the end of the line.
            let end = value_part.find(" #").unwrap_or(value_part.len());
            let value = value_part[..end].trim_end_matches([' ', '\t']);
            (None, value, value_start + value.len())
        }
    };
    if value.is_empty() || value.contains(['{', '}', '$', ' ']) {
        return None;
    }
    if normalized_repository(&image_repository(value)) != wanted || value == new_ref {
        return None;
    }
    let mut new_line = String::with_capacity(line.len() + new_ref.len());
    new_line.push_str(&body[..value_start]);
    match quote {
        Some(q) => {
            new_line.push(q);
            new_line.push_str(new_ref);
            new_line.push(q);
        }
        None => new_line.push_str(new_ref),
    }
    new_line.push_str(&body[value_end..]);
    new_line.push_str(ending);
    Some(new_line)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEW: &str = "registry.example.com/team/web@sha256:1111111111111111111111111111111111111111111111111111111111111111";

    fn rewrite(text: &str) -> String {
        rewrite_image_lines(
            text,
            &normalized_repository("registry.example.com/team/web"),
            NEW,
        )
    }

    #[test]
    fn rewrites_only_the_image_line() {
        let text = "services:\n  web:\n    image: registry.example.com/team/web:1.0 # pinned by rebake\n    ports: [\"80:80\"]\n  db:\n    image: \"registry.example.com/team/db:1\"\n";
        let out = rewrite(text);
        assert_eq!(
            out,
            format!("services:\n  web:\n    image: {NEW} # pinned by rebake\n    ports: [\"80:80\"]\n  db:\n    image: \"registry.example.com/team/db:1\"\n")
        );
        // Idempotent.
        assert_eq!(rewrite(&out), out);
    }

    #[test]
    fn list_items_quotes_and_crlf() {
        let text =
            "      - image: 'registry.example.com/team/web@sha256:00'\r\n        name: web\r\n";
        assert_eq!(
            rewrite(text),
            format!("      - image: '{NEW}'\r\n        name: web\r\n")
        );
        // Another repository whose name merely starts the same: untouched.
        let other =
            "image: registry.example.com/team/web-admin:1\nimage: registry.example.com/team/webx\n";
        assert_eq!(rewrite(other), other);
        // Templated values and keys that only end in `image`: untouched.
        let other = "image: ${WEB_IMAGE}\nbase_image: registry.example.com/team/web:1\n";
        assert_eq!(rewrite(other), other);
    }

    #[test]
    fn a_linked_manifest_is_neither_read_nor_written() {
        let repo = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("compose.yaml");
        let text = "services:\n  web:\n    image: 127.0.0.1:5000/team/web:1.0\n";
        std::fs::write(&target, text).unwrap();
        std::fs::create_dir(repo.path().join("deploy")).unwrap();
        std::os::unix::fs::symlink(&target, repo.path().join("deploy/compose.yaml")).unwrap();
        let digest = format!("127.0.0.1:5000/team/web@sha256:{}", "a".repeat(64));
        let e = rewrite_manifests(repo.path(), &["deploy".into()], "web", &digest).unwrap_err();
        assert!(format!("{e:#}").contains("symbolic link"), "{e:#}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), text);
    }
}
