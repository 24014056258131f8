//! `rebake render [--check]`: Dockerfiles from the templates, policies and locks.

use super::*;

#[derive(Debug, Clone)]
pub struct RenderRequest {
    pub images: Vec<String>,
    pub check: bool,
}

/// `rebake render [--check]`: re-renders Dockerfiles from the locks (no network).
pub fn render(ctx: &Context, req: RenderRequest) -> Result<u8> {
    let outcomes = crate::render::render_repo(&ctx.repo, &req.images, req.check)?;
    let mut differs = false;
    for o in &outcomes {
        if let Some(why) = &o.skipped {
            println!("{}: skipped ({why})", o.image);
        } else if o.changed && req.check {
            differs = true;
            println!(
                "{}: {} differs from what the template renders",
                o.image,
                o.path.display()
            );
            print!("{}", o.diff);
        } else if o.changed {
            println!("{}: wrote {}", o.image, o.path.display());
        } else {
            println!("{}: up to date", o.image);
        }
    }
    Ok(if differs { 1 } else { 0 })
}
