//! The fleet dashboard on GitHub and Gitea: one issue, like Renovate's dependency dashboard,
//! holding `rebake status`'s table. It is found again by its label and a marker in its body (a
//! person's issue that merely carries the label is never taken over), opened once, edited only
//! when its text changes, reopened if someone closed it while policies exist, and closed when
//! the repository has none.

use crate::commands::fleet::{ImageStatus, COLUMNS};
use crate::forge::{Forge, ForgeResult, Issue};
use serde::Serialize;

/// The label that finds the dashboard issue.
pub const LABEL: &str = "rebake-dashboard";
/// The first line of the dashboard's body: what tells it from a person's issue with the label.
pub const MARKER: &str = "<!-- rebake:dashboard -->";
pub const TITLE: &str = "rebake dashboard";

/// What [`update`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Outcome {
    Created {
        issue: Issue,
    },
    Updated {
        issue: Issue,
    },
    Unchanged {
        issue: Issue,
    },
    Closed {
        issue: Issue,
    },
    /// No policies and no dashboard: nothing to show, nothing opened.
    NoPolicies,
    /// Plain git: `rebake status` is the fleet view.
    NoIssues,
}

impl Outcome {
    /// One line for the terminal.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Created { issue } => {
                format!("dashboard: opened #{} {}", issue.number, issue.url)
            }
            Outcome::Updated { issue } => {
                format!("dashboard: updated #{} {}", issue.number, issue.url)
            }
            Outcome::Unchanged { issue } => {
                format!("dashboard: #{} {} is up to date", issue.number, issue.url)
            }
            Outcome::Closed { issue } => format!(
                "dashboard: closed #{} {} (the repository has no policies)",
                issue.number, issue.url
            ),
            Outcome::NoPolicies => "dashboard: the repository has no policies; none opened".into(),
            Outcome::NoIssues => {
                "dashboard: plain git keeps no issues; `rebake status` shows the fleet".into()
            }
        }
    }
}

/// The dashboard issue's body for `rows` (the same table as `rebake status`).
pub fn body(rows: &[ImageStatus]) -> String {
    let mut out = format!(
        "{MARKER}\nrebake keeps this issue up to date from the default branch, the verified Debian \
         archive, this forge and its deployment log; edits are overwritten. `rebake status` \
         prints the same table.\n\n"
    );
    let security: usize = rows.iter().filter(|r| r.pending.security > 0).count();
    let cves: usize = rows.iter().map(|r| r.pending.cves).sum();
    let proposals = rows.iter().filter(|r| r.proposal.is_some()).count();
    let errors = rows.iter().filter(|r| r.last_error.is_some()).count();
    out.push_str(&format!(
        "**{} images** · {security} with pending security fixes ({cves} CVEs) · {proposals} open \
         proposals · {errors} with errors\n\n",
        rows.len()
    ));
    let line = |cells: Vec<String>| format!("| {} |\n", cells.join(" | "));
    out.push_str(&line(COLUMNS.iter().map(|c| c.to_string()).collect()));
    out.push_str(&line(COLUMNS.iter().map(|_| "---".to_string()).collect()));
    for r in rows {
        out.push_str(&line(r.cells().iter().map(|c| cell(c)).collect()));
    }
    out
}

/// A table cell: pipes escaped and line breaks flattened, so an error message cannot break the
/// table.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\r', '\n'], " ")
}

/// Brings the dashboard up to date with `rows` (empty: the repository has no policies).
pub async fn update(forge: &impl Forge, rows: &[ImageStatus]) -> ForgeResult<Outcome> {
    if !forge.has_issues() {
        return Ok(Outcome::NoIssues);
    }
    let existing = forge
        .issues_labelled(LABEL)
        .await?
        .into_iter()
        .find(|i| i.body.starts_with(MARKER));
    if rows.is_empty() {
        return Ok(match existing {
            Some(issue) if issue.open => {
                let body = format!(
                    "{MARKER}\nThe repository has no policies: nothing for rebake to keep up to \
                     date. rebake reopens this issue when a policy appears.\n"
                );
                forge.edit_issue(issue.number, TITLE, &body, false).await?;
                Outcome::Closed { issue }
            }
            _ => Outcome::NoPolicies,
        });
    }
    let body = body(rows);
    match existing {
        Some(issue) if issue.open && issue.title == TITLE && same_text(&issue.body, &body) => {
            Ok(Outcome::Unchanged { issue })
        }
        Some(mut issue) => {
            forge.edit_issue(issue.number, TITLE, &body, true).await?;
            issue.body = body;
            issue.open = true;
            Ok(Outcome::Updated { issue })
        }
        None => {
            let issue = forge
                .create_issue(TITLE, &body, &[LABEL.to_string()])
                .await?;
            Ok(Outcome::Created { issue })
        }
    }
}

/// Forges may hand a body back with `\r\n` line ends.
fn same_text(a: &str, b: &str) -> bool {
    a.replace("\r\n", "\n").trim_end() == b.replace("\r\n", "\n").trim_end()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::fleet::{LoggedError, Pending};

    fn row(image: &str, error: Option<&str>) -> ImageStatus {
        ImageStatus {
            image: image.into(),
            group: None,
            locked: Some(format!("sha256:{}", "ab".repeat(32))),
            tests_passed: Some(true),
            pending: Pending {
                sources: 2,
                security: 1,
                cves: 3,
                held_until: None,
            },
            proposal: None,
            targets: Vec::new(),
            last_error: error.map(|m| LoggedError {
                time: "2026-11-29T10:00:00Z".into(),
                message: m.into(),
            }),
            jobs: Vec::new(),
        }
    }

    #[test]
    fn body_starts_with_the_marker_and_sums_up_the_fleet() {
        let body = body(&[
            row("nginx", None),
            row("postgres", Some("refused: tests failed")),
        ]);
        assert!(body.starts_with(MARKER), "{body}");
        assert!(
            body.contains("**2 images** · 2 with pending security fixes (6 CVEs) · 0 open proposals · 1 with errors"),
            "{body}"
        );
        assert!(
            body.contains(
                "| nginx | sha256:abababababab | 2 (1 security, 3 CVEs) | - | - | - | - |"
            ),
            "{body}"
        );
    }

    #[test]
    fn a_message_cannot_break_the_table() {
        let body = body(&[row("nginx", Some("exit 1: a | b\nsecond line"))]);
        let last = body.lines().last().unwrap();
        assert!(last.contains("exit 1: a \\| b second line |"), "{body}");
        assert_eq!(body.lines().filter(|l| l.starts_with("| nginx")).count(), 1);
    }
}
