//! All text rebake writes on a forge, in one place: a proposal's title, body and commit
//! message (one image or a review group), and the comment on a deployed proposal. Each is made
//! from values the stages computed (the plan's changes, the locks, the rollout), never by
//! looking anything up.

use crate::lock::Lock;
use crate::plan::{Change, ChangeKind};
use crate::security::CveFix;
use std::collections::BTreeSet;

fn version_or_none(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("none")
}

/// What kind of change a proposal brings, from the least to the most pressing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// No installed package changed; the image was rebuilt.
    Rebuild,
    /// Only binaries changed, not their source versions (binNMUs).
    BinaryRebuild,
    /// There was no lock yet.
    FirstBuild,
    Update,
    SecurityUpdate,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Rebuild => "rebuild",
            Kind::BinaryRebuild => "binary rebuild",
            Kind::FirstBuild => "first build",
            Kind::Update => "update",
            Kind::SecurityUpdate => "security update",
        }
    }
}

/// What a title says about one image: the kind of change and, except for a rebuild, what
/// changed (`openssl 3.5.1-1 → 3.5.4-1 and 2 more, 2 CVEs`, `14 source packages`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Headline {
    pub kind: Kind,
    pub detail: Option<String>,
}

/// The headline of an image's changes.
pub fn headline(changes: &[Change]) -> Headline {
    let Some(first) = changes.first() else {
        return Headline {
            kind: Kind::Rebuild,
            detail: None,
        };
    };
    if changes.iter().all(|c| c.kind == ChangeKind::BinaryRebuild) {
        let b = first.binaries.first();
        let mut what = match b {
            Some(b) => format!(
                "{} {} → {}",
                b.name,
                version_or_none(&b.old),
                version_or_none(&b.new)
            ),
            None => first.source.clone(),
        };
        let count: usize = changes.iter().map(|c| c.binaries.len()).sum();
        if count > 1 {
            what.push_str(&format!(" and {} more", count - 1));
        }
        return Headline {
            kind: Kind::BinaryRebuild,
            detail: Some(what),
        };
    }
    if changes.iter().all(|c| c.old.is_none()) {
        return Headline {
            kind: Kind::FirstBuild,
            detail: Some(format!("{} source packages", changes.len())),
        };
    }
    let kind = if changes.iter().any(|c| c.security) {
        Kind::SecurityUpdate
    } else {
        Kind::Update
    };
    let cves: BTreeSet<&str> = changes
        .iter()
        .flat_map(|c| c.cves.iter().map(|f| f.id.as_str()))
        .collect();
    let mut what = format!(
        "{} {} → {}",
        first.source,
        version_or_none(&first.old),
        version_or_none(&first.new)
    );
    if changes.len() > 1 {
        what.push_str(&format!(" and {} more", changes.len() - 1));
    }
    match cves.len() {
        0 => {}
        1 => what.push_str(", 1 CVE"),
        n => what.push_str(&format!(", {n} CVEs")),
    }
    Headline {
        kind,
        detail: Some(what),
    }
}

/// `nginx: security update (openssl 3.5.1-1 → 3.5.4-1, 2 CVEs)`.
pub fn title(image: &str, changes: &[Change]) -> String {
    headline_title(image, &headline(changes))
}

fn headline_title(image: &str, h: &Headline) -> String {
    match &h.detail {
        Some(detail) => format!("{image}: {} ({detail})", h.kind.word()),
        None => format!("{image}: {}", h.kind.word()),
    }
}

/// The longest title a group proposal gets (GitHub takes 256 characters).
pub const MAX_GROUP_TITLE_CHARS: usize = 250;

/// The longest pull request description rebake sends (GitHub takes 65,536 characters).
pub const MAX_BODY_CHARS: usize = 60_000;

/// `body` as the forge gets it: whole when it fits [`MAX_BODY_CHARS`], else cut at a line
/// boundary with a note that the full text is the message of commit `head` (git has no limit).
pub fn fit_body(body: &str, head: &str) -> String {
    if body.chars().count() <= MAX_BODY_CHARS {
        return body.to_string();
    }
    let note = format!(
        "\n\n*… shortened to fit the forge's limit: the full description is the message of \
         commit {head}.*\n"
    );
    let budget = MAX_BODY_CHARS - note.chars().count();
    let (mut kept, mut count) = (String::new(), 0);
    for line in body.split_inclusive('\n') {
        count += line.chars().count();
        if count > budget {
            break;
        }
        kept.push_str(line);
    }
    kept.truncate(kept.trim_end().len());
    kept + &note
}

/// `web images: security update — nginx (openssl 3.5.1-1 → 3.5.4-1, 2 CVEs), postgres (…)`:
/// the most pressing kind of change among the members, then each member's headline (its kind
/// too when it differs), as many as fit in [`MAX_GROUP_TITLE_CHARS`], the rest as `+N more`.
pub fn group_title(group: &str, members: &[(&str, &Headline)]) -> String {
    let kind = members
        .iter()
        .map(|(_, h)| h.kind)
        .max()
        .unwrap_or(Kind::Rebuild);
    let part = |name: &str, h: &Headline| match (h.kind == kind, &h.detail) {
        (true, Some(d)) => format!("{name} ({d})"),
        (true, None) => name.to_string(),
        (false, Some(d)) => format!("{name} ({}, {d})", h.kind.word()),
        (false, None) => format!("{name} ({})", h.kind.word()),
    };
    let chars = |s: &str| s.chars().count();
    let more = |n: usize| {
        if n == 0 {
            String::new()
        } else {
            format!(", +{n} more")
        }
    };
    let mut t = format!("{group} images: {} — ", kind.word());
    for (i, (name, h)) in members.iter().enumerate() {
        let p = part(name, h);
        let left = members.len() - i - 1;
        if i > 0 && chars(&t) + 2 + chars(&p) + chars(&more(left)) > MAX_GROUP_TITLE_CHARS {
            t.push_str(&more(left + 1));
            break;
        }
        if i > 0 {
            t.push_str(", ");
        }
        t.push_str(&p);
    }
    if chars(&t) > MAX_GROUP_TITLE_CHARS {
        t = t
            .chars()
            .take(MAX_GROUP_TITLE_CHARS - 1)
            .collect::<String>()
            + "…";
    }
    t
}

/// At most this many CVEs per source package in a body; the rest are counted.
pub const MAX_CVES_PER_PACKAGE: usize = 25;

/// Why an image whose packages did not change was rebuilt, from its old and new locks.
pub fn rebuild_reason(old: Option<&Lock>, new: &Lock) -> String {
    let Some(old) = old else {
        return "first build".into();
    };
    let base = |l: &Lock| l.base.as_ref().map(|b| b.rootfs_sha256.clone());
    if let Some(p) = parent_changed(Some(old), new) {
        format!("rebuilt because parent `{}` changed", p.name)
    } else if base(old) != base(new) {
        "rebuilt on a new base".into()
    } else if old.tests.as_ref().map(|t| &t.results) != new.tests.as_ref().map(|t| &t.results) {
        "rebuilt: the template, the policy or its tests changed, or a rebuild was forced".into()
    } else {
        "rebuilt: the template or the policy changed, or a rebuild was forced".into()
    }
}

/// The new parent of a `from:` image, when it is not the one the old lock was built on.
fn parent_changed<'a>(old: Option<&Lock>, new: &'a Lock) -> Option<&'a crate::lock::Parent> {
    let p = new.parent.as_ref()?;
    let before = old
        .and_then(|o| o.parent.as_ref())
        .map(|o| o.image.as_str());
    (before != Some(p.image.as_str())).then_some(p)
}

/// `sha256:0123456789ab`.
fn short_id(id: &str) -> &str {
    &id[..id.len().min("sha256:".len() + 12)]
}

/// The Security Tracker page of a CVE, DSA or DLA.
fn cve_link(id: &str) -> String {
    format!("[{id}]({})", crate::security::tracker_page(id))
}

/// The proposal body: deterministic Markdown (same inputs, same bytes). `branch` is the
/// proposal's branch, for the reproduce-locally commands.
pub fn body(
    image: &str,
    branch: &str,
    old: Option<&Lock>,
    new: &Lock,
    changes: &[Change],
) -> String {
    let mut b = String::new();
    b.push_str(&format!(
        "rebake rebuilt **{image}** ({}/{}) from verified Debian packages and tested it.\n\n",
        new.suite, new.architecture
    ));
    if let Some(p) = &new.parent {
        match parent_changed(old, new) {
            Some(_) => {
                let was = old
                    .and_then(|o| o.parent.as_ref())
                    .map(|o| format!(", was `{}`", short_id(&o.image)))
                    .unwrap_or_default();
                b.push_str(&format!(
                    "Rebuilt because parent `{}` changed: built on its image `{}`{was}, tested \
                     together with it.\n\n",
                    p.name,
                    short_id(&p.image)
                ));
            }
            None => b.push_str(&format!(
                "Built on parent `{}` (image `{}`, unchanged).\n\n",
                p.name,
                short_id(&p.image)
            )),
        }
    }
    b.push_str("### Packages\n\n| source | old | new | suite | kind | binaries |\n|---|---|---|---|---|---|\n");
    for c in changes {
        let binaries: Vec<String> = c
            .binaries
            .iter()
            .map(|bin| {
                let name = if bin.arch == new.architecture || bin.arch == "all" {
                    bin.name.clone()
                } else {
                    format!("{}:{}", bin.name, bin.arch)
                };
                match (&bin.old, &bin.new) {
                    (Some(o), Some(n)) if c.old.is_some() => format!("{name} {o} → {n}"),
                    (None, Some(n)) if c.old.is_some() => format!("{name} (new) {n}"),
                    (Some(o), None) => format!("{name} {o} (removed)"),
                    _ => name,
                }
            })
            .collect();
        b.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            c.source,
            version_or_none(&c.old),
            version_or_none(&c.new),
            c.suite.as_deref().unwrap_or("-"),
            c.kind.word(),
            binaries.join(", ")
        ));
    }
    if changes.is_empty() {
        b.push_str(&format!(
            "| (no installed package changed; {}) | | | | | |\n",
            rebuild_reason(old, new)
        ));
    }
    let fixes: Vec<(&Change, &CveFix)> = changes
        .iter()
        .flat_map(|c| c.cves.iter().map(move |f| (c, f)))
        .collect();
    let advisories: BTreeSet<&str> = changes
        .iter()
        .flat_map(|c| c.advisories.iter().map(String::as_str))
        .collect();
    if !fixes.is_empty() || !advisories.is_empty() {
        b.push_str("\n### Fixes\n\n");
        if !advisories.is_empty() {
            let list: Vec<String> = advisories.iter().map(|a| cve_link(a)).collect();
            b.push_str(&format!("Advisories: {}\n\n", list.join(", ")));
        }
        if !fixes.is_empty() {
            b.push_str(
                "| CVE | source | fixed in | urgency | status | from |\n|---|---|---|---|---|---|\n",
            );
            for c in changes {
                for f in c.cves.iter().take(MAX_CVES_PER_PACKAGE) {
                    let status = match &f.note {
                        Some(n) => format!("{} ({n})", f.status),
                        None => f.status.clone(),
                    };
                    b.push_str(&format!(
                        "| {} | {} | {} | {} | {} | {} |\n",
                        cve_link(&f.id),
                        c.source,
                        f.fixed_in.as_deref().unwrap_or("-"),
                        f.urgency.as_deref().unwrap_or("-"),
                        status,
                        f.learnt_from.join(", ")
                    ));
                }
                if c.cves.len() > MAX_CVES_PER_PACKAGE {
                    b.push_str(&format!(
                        "| … and {} more | {} | | | | |\n",
                        c.cves.len() - MAX_CVES_PER_PACKAGE,
                        c.source
                    ));
                }
            }
        }
    }
    let entries: Vec<&Change> = changes.iter().filter(|c| c.changelog.is_some()).collect();
    if !entries.is_empty() {
        b.push_str("\n### Changelog\n\nEntries in the range, from each package's own changelog in the image:\n\n| source | version | uploaded to | urgency | CVEs |\n|---|---|---|---|---|\n");
        for c in entries {
            for e in c.changelog.iter().flatten() {
                b.push_str(&format!(
                    "| {} | {} | {} | {} | {} |\n",
                    c.source,
                    e.version,
                    e.distribution,
                    e.urgency.as_deref().unwrap_or("-"),
                    e.cves.len()
                ));
            }
        }
    }
    let missing: Vec<&str> = changes
        .iter()
        .filter(|c| c.changelog_missing)
        .map(|c| c.source.as_str())
        .collect();
    if !missing.is_empty() {
        b.push_str(&format!(
            "\nThe image has no changelog for {} (documentation excluded?): the CVEs they fix \
             are named only when the Security Tracker knows them.\n",
            missing.join(", ")
        ));
    }
    b.push_str("\n### Image\n\n");
    if let Some(base) = &new.base {
        b.push_str(&format!(
            "- base rootfs SHA256: `{}` (image `{}`)\n",
            base.rootfs_sha256, base.id
        ));
    }
    if let Some(img) = &new.image {
        b.push_str(&format!("- image id: `{}`\n", img.id));
        match &img.digest {
            Some(d) => b.push_str(&format!("- digest: `{d}`\n")),
            None => b.push_str("- digest: not pushed (no registry configured)\n"),
        }
    }
    for a in &new.archive {
        b.push_str(&format!(
            "- archive: `{}` {} (InRelease `{}`, {})\n",
            a.uri,
            a.suite,
            &a.inrelease_sha256[..a.inrelease_sha256.len().min(16)],
            a.date
        ));
    }
    if let Some(old) = old.and_then(|o| o.image.as_ref()) {
        b.push_str(&format!("- replaces image `{}`\n", old.id));
    }
    b.push_str("\n### Tests\n\n");
    match &new.tests {
        Some(t) => {
            b.push_str("| test | result | time |\n|---|---|---|\n");
            for r in &t.results {
                b.push_str(&format!(
                    "| {} | {} | {:.1} s |\n",
                    r.name,
                    r.result,
                    r.duration_ms as f64 / 1000.0
                ));
            }
            b.push_str(&format!(
                "\nAll tests {}.\n",
                if t.passed { "passed" } else { "did NOT pass" }
            ));
        }
        None => b.push_str("No test results recorded.\n"),
    }
    b.push_str(&format!(
        "\n### Reproduce locally\n\n```sh\ngit fetch origin {branch} && git checkout FETCH_HEAD\nrebake build {image} --no-push --force\nrebake scan {image}\n```\n\n<sub>Generated by rebake. Merging deploys exactly the digest above.</sub>\n"
    ));
    b
}

/// One image's part of a proposal.
#[derive(Debug, Clone)]
pub struct Described {
    pub headline: Headline,
    pub title: String,
    pub body: String,
}

/// A proposal's title and body for the move of `image` from `old` to `new` (the plan's
/// `changes`), on `branch`.
pub fn describe(
    image: &str,
    branch: &str,
    old: Option<&Lock>,
    new: &Lock,
    changes: &[Change],
) -> Described {
    let mut headline = headline(changes);
    if headline.kind == Kind::Rebuild {
        headline.detail = Some(rebuild_reason(old, new));
    }
    Described {
        title: headline_title(image, &headline),
        body: body(image, branch, old, new, changes),
        headline,
    }
}

/// A group proposal's body: a header listing the images it carries (and those of the group
/// already current), then each image's own body under a `## <image>` heading.
pub fn group_body(group: &str, members: &[(&str, &Described)], current: &[&str]) -> String {
    let mut b = format!(
        "rebake rebuilt {} of group **{group}** from verified Debian packages and tested them; \
         merging deploys each image's tested digest.\n\n",
        if members.len() == 1 {
            "one image"
        } else {
            "the images"
        }
    );
    for (_, d) in members {
        b.push_str(&format!("- {}\n", d.title));
    }
    if !current.is_empty() {
        b.push_str(&format!(
            "\nAlready current, not in this proposal: {}.\n",
            current.join(", ")
        ));
    }
    for (name, d) in members {
        b.push_str(&format!("\n## {name}\n\n{}", d.body));
    }
    b
}

/// The commit message of a proposal's head: title, blank line, body.
pub fn commit_message(title: &str, body: &str) -> String {
    format!("{title}\n\n{body}")
}

/// The markdown comment a merged proposal gets.
pub fn deploy_comment(r: &crate::rollout::ImageRollout) -> String {
    let mut s = format!(
        "rebake deployed `{}` at {} (commit {}):\n\n| target | result | from | time |\n|---|---|---|---|\n",
        r.image_ref.as_deref().unwrap_or("?"),
        chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC"),
        &r.commit[..r.commit.len().min(12)]
    );
    for t in &r.targets {
        s.push_str(&format!(
            "| {} | {} | {} | {:.1} s |\n",
            t.target,
            t.result.word(),
            t.from.as_deref().unwrap_or("-"),
            t.duration.as_secs_f64()
        ));
    }
    if let Some(why) = &r.refused {
        s.push_str(&format!("\nRefused: {why}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::{ImageRef, TestSummary};

    fn change(source: &str, old: Option<&str>, new: &str, security: bool, cves: &[&str]) -> Change {
        Change {
            source: source.into(),
            old: old.map(String::from),
            new: Some(new.into()),
            suite: Some(
                if security {
                    "trixie-security"
                } else {
                    "trixie"
                }
                .into(),
            ),
            kind: match (old, security) {
                (None, _) => ChangeKind::New,
                (_, true) => ChangeKind::Security,
                _ => ChangeKind::Update,
            },
            security,
            binaries: vec![crate::plan::BinaryChange {
                name: source.into(),
                arch: "amd64".into(),
                old: old.map(String::from),
                new: Some(new.into()),
            }],
            cves: cves
                .iter()
                .map(|id| CveFix {
                    id: id.to_string(),
                    urgency: None,
                    status: "resolved".into(),
                    note: None,
                    learnt_from: vec!["tracker".into()],
                    fixed_in: None,
                })
                .collect(),
            advisories: Vec::new(),
            changelog: None,
            changelog_missing: false,
        }
    }

    fn lock(name: &str) -> Lock {
        Lock {
            lock_version: 1,
            name: name.into(),
            suite: "trixie".into(),
            architecture: "amd64".into(),
            archive: Vec::new(),
            base: None,
            parent: None,
            reason: None,
            packages: Vec::new(),
            image: Some(ImageRef {
                id: format!("sha256:{name}"),
                digest: None,
            }),
            tests: Some(TestSummary {
                passed: true,
                results: Vec::new(),
            }),
        }
    }

    fn security() -> Vec<Change> {
        vec![
            change(
                "openssl",
                Some("3.5.1-1"),
                "3.5.4-1",
                true,
                &["CVE-2025-1", "CVE-2025-2"],
            ),
            change("zlib", Some("1.3-1"), "1.3-2", false, &[]),
        ]
    }

    #[test]
    fn one_image_titles() {
        assert_eq!(
            title("nginx", &security()),
            "nginx: security update (openssl 3.5.1-1 → 3.5.4-1 and 1 more, 2 CVEs)"
        );
        let point = [change(
            "libpq",
            Some("17.5-1"),
            "17.6-1",
            false,
            &["CVE-2025-3"],
        )];
        assert_eq!(
            title("postgres", &point),
            "postgres: update (libpq 17.5-1 → 17.6-1, 1 CVE)"
        );
        let first = [
            change("bash", None, "5.2-1", false, &[]),
            change("dash", None, "0.5-1", false, &[]),
        ];
        assert_eq!(
            title("debian", &first),
            "debian: first build (2 source packages)"
        );
        assert_eq!(title("debian", &[]), "debian: rebuild");
    }

    #[test]
    fn group_title_names_each_image_under_the_most_pressing_kind() {
        let nginx = headline(&security());
        let postgres = headline(&[change("libpq", Some("17.5-1"), "17.6-1", false, &[])]);
        let fresh = headline(&[change("bash", None, "5.2-1", false, &[])]);
        let rebuilt = headline(&[]);
        assert_eq!(
            group_title(
                "web",
                &[
                    ("nginx", &nginx),
                    ("postgres", &postgres),
                    ("ticker", &fresh),
                    ("proxy", &rebuilt)
                ]
            ),
            "web images: security update — nginx (openssl 3.5.1-1 → 3.5.4-1 and 1 more, 2 CVEs), \
             postgres (update, libpq 17.5-1 → 17.6-1), ticker (first build, 1 source packages), \
             proxy (rebuild)"
        );
        assert_eq!(
            group_title("pair", &[("a", &fresh), ("b", &fresh)]),
            "pair images: first build — a (1 source packages), b (1 source packages)"
        );
        assert_eq!(
            group_title("pair", &[("a", &rebuilt), ("b", &rebuilt)]),
            "pair images: rebuild — a, b"
        );
    }

    #[test]
    fn a_long_group_title_summarises_the_rest() {
        let h = headline(&security());
        let names: Vec<String> = (0..20).map(|i| format!("image-{i:02}")).collect();
        let members: Vec<(&str, &Headline)> = names.iter().map(|n| (n.as_str(), &h)).collect();
        let t = group_title("many", &members);
        assert!(t.chars().count() <= MAX_GROUP_TITLE_CHARS, "{t}");
        let shown = names.iter().filter(|n| t.contains(n.as_str())).count();
        assert!(shown >= 2, "{t}");
        assert!(t.ends_with(&format!(", +{} more", 20 - shown)), "{t}");
        assert_eq!(t, group_title("many", &members), "deterministic");
        // One image whose headline alone is too long is cut, never over the limit.
        let long = Headline {
            kind: Kind::Update,
            detail: Some("x".repeat(400)),
        };
        let t = group_title("g", &[("a", &long), ("b", &long)]);
        assert_eq!(t.chars().count(), MAX_GROUP_TITLE_CHARS);
        assert!(t.ends_with('…'), "{t}");
    }

    #[test]
    fn group_body_lists_the_images_then_each_body() {
        let branch = "rebake/group/web";
        let describe_one = |name: &str, ch: &[Change]| {
            let headline = headline(ch);
            Described {
                title: headline_title(name, &headline),
                body: body(name, branch, None, &lock(name), ch),
                headline,
            }
        };
        let nginx = describe_one("nginx", &security());
        let postgres = describe_one(
            "postgres",
            &[change("libpq", Some("17.5-1"), "17.6-1", false, &[])],
        );
        let b = group_body(
            "web",
            &[("nginx", &nginx), ("postgres", &postgres)],
            &["redis"],
        );
        assert!(
            b.starts_with("rebake rebuilt the images of group **web** "),
            "{b}"
        );
        let header = format!("\n\n- {}\n- {}\n", nginx.title, postgres.title);
        assert!(b.contains(&header), "{b}");
        assert!(
            b.contains("\nAlready current, not in this proposal: redis.\n"),
            "{b}"
        );
        let at = |s: &str| {
            b.find(s)
                .unwrap_or_else(|| panic!("{s} missing from:\n{b}"))
        };
        assert!(at("\n## nginx\n\n") < at("\n## postgres\n\n"));
        assert!(b.contains(&format!("\n## nginx\n\n{}", nginx.body)), "{b}");
        assert!(b.ends_with(&postgres.body), "{b}");
        assert!(b.contains("git fetch origin rebake/group/web &&"), "{b}");
        assert!(!b.contains("origin rebake/nginx"), "{b}");
        assert_eq!(
            b,
            group_body(
                "web",
                &[("nginx", &nginx), ("postgres", &postgres)],
                &["redis"]
            ),
            "deterministic"
        );
        let alone = group_body("web", &[("nginx", &nginx)], &[]);
        assert!(
            alone.starts_with("rebake rebuilt one image of group **web**"),
            "{alone}"
        );
        assert!(!alone.contains("Already current"), "{alone}");
    }

    #[test]
    fn a_body_too_long_for_the_forge_is_cut_at_a_line_with_a_note() {
        let short = "| a | b |\n";
        assert_eq!(fit_body(short, "abc"), short);
        let line = "| libfoo | 1.0-1 → 1.0-2 | trixie-security | yes | libfoo1 libfoo-dev |\n";
        let long = line.repeat(MAX_BODY_CHARS / line.chars().count() + 10);
        let fitted = fit_body(&long, "0123abcd");
        assert!(fitted.chars().count() <= MAX_BODY_CHARS);
        assert!(
            fitted.ends_with("message of commit 0123abcd.*\n"),
            "{}",
            &fitted[fitted.len() - 200..]
        );
        let kept = fitted.split("\n\n*…").next().unwrap();
        assert!(
            kept.lines().all(|l| l == line.trim_end()),
            "cut inside a line"
        );
    }

    #[test]
    fn a_binary_rebuild_names_its_binaries_and_a_plain_rebuild_says_why() {
        let mut c = change("zlib", Some("1:1.3-1"), "1:1.3-1", false, &[]);
        c.kind = ChangeKind::BinaryRebuild;
        c.binaries[0].name = "zlib1g".into();
        c.binaries[0].new = Some("1:1.3-1+b1".into());
        assert_eq!(
            title("web", std::slice::from_ref(&c)),
            "web: binary rebuild (zlib1g 1:1.3-1 → 1:1.3-1+b1)"
        );
        let new = lock("web");
        let d = describe("web", "rebake/web", Some(&lock("web")), &new, &[c]);
        assert!(
            d.body
                .contains("| zlib | 1:1.3-1 | 1:1.3-1 | trixie | binary rebuild | zlib1g 1:1.3-1 → 1:1.3-1+b1 |"),
            "{}",
            d.body
        );
        let mut rebased = lock("web");
        rebased.base = Some(crate::lock::Base {
            rootfs_sha256: "1".repeat(64),
            id: format!("sha256:{}", "2".repeat(64)),
        });
        let d = describe("web", "rebake/web", Some(&lock("web")), &rebased, &[]);
        assert_eq!(d.title, "web: rebuild (rebuilt on a new base)");
        assert!(
            d.body
                .contains("(no installed package changed; rebuilt on a new base)"),
            "{}",
            d.body
        );
    }
}
