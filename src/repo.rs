//! The user's GitOps repository, as every stage reads it: the policies (all, or the named
//! ones), a commit's tree exported to a directory, the generated files of an image, and the
//! branch each image or review group is proposed on.

use crate::config::Diagnostic;
use crate::policy::Policy;
use anyhow::{anyhow, bail, Result};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The prefix of every proposal branch: `rebake/<image>`.
pub const BRANCH_PREFIX: &str = "rebake/";
/// The prefix of a review group's proposal branch: `rebake/group/<name>`.
pub const GROUP_BRANCH_PREFIX: &str = "rebake/group/";

/// Every diagnostic of a config or policy file, one per line, as one error.
pub fn diagnostics_error(diags: Vec<Diagnostic>) -> anyhow::Error {
    anyhow!(
        "{}",
        diags
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    )
}

/// The repository's policies, or the named ones (an unknown name lists the known ones).
pub fn policies(repo: &Path, images: &[String]) -> Result<Vec<Policy>> {
    let policies = crate::policy::load_policies(repo).map_err(diagnostics_error)?;
    for name in images {
        if !policies.iter().any(|p| &p.name == name) {
            let known: Vec<&str> = policies.iter().map(|p| p.name.as_str()).collect();
            bail!(
                "no policy for image {name:?} in {} (known: {})",
                repo.join(crate::policy::POLICIES_DIR).display(),
                known.join(", ")
            );
        }
    }
    Ok(policies
        .into_iter()
        .filter(|p| images.is_empty() || images.contains(&p.name))
        .collect())
}

/// The named images (all when none) and the other images of their review groups: a group is
/// always proposed whole.
pub fn policies_with_their_groups(repo: &Path, images: &[String]) -> Result<Vec<Policy>> {
    let named = policies(repo, images)?;
    let groups: BTreeSet<&str> = named
        .iter()
        .filter_map(|p| p.review.group.as_deref())
        .collect();
    if images.is_empty() || groups.is_empty() {
        return Ok(named);
    }
    Ok(policies(repo, &[])?
        .into_iter()
        .filter(|p| {
            images.contains(&p.name)
                || p.review
                    .group
                    .as_deref()
                    .is_some_and(|g| groups.contains(g))
        })
        .collect())
}

/// Writes every file of `commit`'s tree under `dir` (executable bits kept).
pub fn export_tree(repo: &git2::Repository, commit: git2::Oid, dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tree = repo.find_commit(commit)?.tree()?;
    let mut err: Option<anyhow::Error> = None;
    tree.walk(git2::TreeWalkMode::PreOrder, |root, entry| {
        if entry.kind() != Some(git2::ObjectType::Blob) {
            return git2::TreeWalkResult::Ok;
        }
        let path = dir.join(root).join(entry.name().unwrap_or_default());
        let res = (|| -> Result<()> {
            let blob = repo.find_blob(entry.id())?;
            if let Some(p) = path.parent() {
                std::fs::create_dir_all(p)?;
            }
            std::fs::write(&path, blob.content())?;
            if entry.filemode() == 0o100755 {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
            }
            Ok(())
        })();
        match res {
            Ok(()) => git2::TreeWalkResult::Ok,
            Err(e) => {
                err = Some(e);
                git2::TreeWalkResult::Abort
            }
        }
    })?;
    match err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The files rebake generates for an image, relative to the repository: its Dockerfile and lock.
pub fn image_files(name: &str) -> [PathBuf; 2] {
    [
        crate::render::dockerfile_path(Path::new(""), name),
        crate::lock::path_for(Path::new(""), name),
    ]
}

/// The branch an image is proposed on: `rebake/<image>`, or `rebake/group/<name>` for an image
/// of the review group `name`.
pub fn proposal_branch(image: &str, group: Option<&str>) -> String {
    match group {
        Some(group) => format!("{GROUP_BRANCH_PREFIX}{group}"),
        None => format!("{BRANCH_PREFIX}{image}"),
    }
}

/// What a merged proposal deploys, by its head branch: `rebake/group/<name>` every image of the
/// group, as the policies at the merge commit say (targets already running an image's locked
/// digest are left alone); `rebake/<image>` that image. Returns (images, group).
pub fn merged_selection(head_branch: &str) -> (Vec<String>, Option<String>) {
    match head_branch.strip_prefix(GROUP_BRANCH_PREFIX) {
        Some(group) => (Vec::new(), Some(group.to_string())),
        None => (
            vec![head_branch
                .strip_prefix(BRANCH_PREFIX)
                .unwrap_or(head_branch)
                .to_string()],
            None,
        ),
    }
}

/// The commit the image's inputs were last changed in, walking first parents from `head`: the
/// policy, the templates, the image's context files. A proposal commit (only generated files)
/// therefore has the revision of the commit it was built from, so that rebuilding the proposal
/// gives its image id.
pub fn inputs_revision(repo: &git2::Repository, head: git2::Oid, image: &str) -> Result<git2::Oid> {
    let inputs = [
        PathBuf::from(crate::policy::POLICIES_DIR).join(format!("{image}.yaml")),
        PathBuf::from(crate::policy::TEMPLATES_DIR),
        PathBuf::from(crate::render::IMAGES_DIR)
            .join(image)
            .join("context"),
    ];
    let id_at = |commit: &git2::Commit, path: &Path| -> Option<git2::Oid> {
        commit.tree().ok()?.get_path(path).ok().map(|e| e.id())
    };
    let mut current = repo.find_commit(head)?;
    loop {
        let Ok(parent) = current.parent(0) else {
            return Ok(current.id());
        };
        if inputs
            .iter()
            .any(|p| id_at(&current, p) != id_at(&parent, p))
        {
            return Ok(current.id());
        }
        current = parent;
    }
}

/// [`inputs_revision`] of the checkout at `dir`'s HEAD, when `dir` is a git checkout with a
/// commit.
pub fn checkout_inputs_revision(dir: &Path, image: &str) -> Option<String> {
    let repo = git2::Repository::discover(dir).ok()?;
    let head = repo.head().ok()?.peel_to_commit().ok()?.id();
    inputs_revision(&repo, head, image)
        .ok()
        .map(|id| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merged_group_proposal_deploys_its_group() {
        assert_eq!(
            merged_selection("rebake/nginx"),
            (vec!["nginx".to_string()], None)
        );
        assert_eq!(
            merged_selection("rebake/group/web"),
            (Vec::new(), Some("web".to_string()))
        );
        assert_eq!(proposal_branch("nginx", None), "rebake/nginx");
        assert_eq!(proposal_branch("nginx", Some("web")), "rebake/group/web");
    }

    #[test]
    fn the_inputs_revision_skips_commits_of_generated_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init(dir.path()).unwrap();
        let sig = git2::Signature::new("t", "t@example.invalid", &git2::Time::new(0, 0)).unwrap();
        let commit = |files: &[(&str, &str)], parent: Option<git2::Oid>| -> git2::Oid {
            for (path, text) in files {
                let p = dir.path().join(path);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(p, text).unwrap();
            }
            let mut index = repo.index().unwrap();
            index
                .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
                .unwrap();
            let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
            let parents: Vec<git2::Commit> = parent
                .map(|p| repo.find_commit(p).unwrap())
                .into_iter()
                .collect();
            let parents: Vec<&git2::Commit> = parents.iter().collect();
            repo.commit(None, &sig, &sig, "c", &tree, &parents).unwrap()
        };
        let first = commit(
            &[
                ("policies/nginx.yaml", "a"),
                ("templates/x.hbs", "t"),
                ("policies/other.yaml", "o"),
            ],
            None,
        );
        let policy_change = commit(&[("policies/nginx.yaml", "b")], Some(first));
        let generated = commit(
            &[
                ("images/nginx/Dockerfile", "FROM x"),
                ("images/nginx/rebake.lock", "l"),
            ],
            Some(policy_change),
        );
        let other_image = commit(&[("policies/other.yaml", "p")], Some(generated));
        assert_eq!(
            inputs_revision(&repo, other_image, "nginx").unwrap(),
            policy_change
        );
        let template = commit(&[("templates/x.hbs", "u")], Some(other_image));
        assert_eq!(inputs_revision(&repo, template, "nginx").unwrap(), template);
        let context = commit(&[("images/nginx/context/a", "1")], Some(template));
        assert_eq!(inputs_revision(&repo, context, "nginx").unwrap(), context);
        assert_eq!(inputs_revision(&repo, first, "nginx").unwrap(), first);
    }
}
