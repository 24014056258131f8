//! `rebake check`: validates rebake.yaml, the policies and the templates.

use super::*;

/// `rebake check`: prints every problem found; exit 1 when there is any.
pub fn check(ctx: &Context) -> Result<u8> {
    let report = crate::check::check_repo(&ctx.repo, ctx.config.as_deref());
    for d in &report.diagnostics {
        eprintln!("{d}");
    }
    if report.is_ok() {
        println!("{}", report.summary());
        Ok(0)
    } else {
        eprintln!("{} error(s)", report.diagnostics.len());
        Ok(1)
    }
}
