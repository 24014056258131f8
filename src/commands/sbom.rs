//! `rebake sbom IMAGE [--format spdx|cyclonedx]`: the image's bill of materials, from its lock.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SbomFormat {
    Spdx,
    CycloneDx,
}

#[derive(Debug, Clone)]
pub struct SbomRequest {
    pub image: String,
    pub format: SbomFormat,
}

/// Prints the SBOM of `images/<image>/rebake.lock` (SPDX 2.3 or CycloneDX 1.6 JSON).
pub fn sbom(ctx: &Context, req: SbomRequest) -> Result<u8> {
    crate::repo::policies(&ctx.repo, std::slice::from_ref(&req.image))?;
    let path = lock::path_for(&ctx.repo, &req.image);
    if !path.exists() {
        bail!(
            "image {} has no lock yet ({}): run `{}`",
            req.image,
            path.display(),
            crate::output::build_hint(&req.image)
        );
    }
    let lock = Lock::read(&path)?;
    let doc = match req.format {
        SbomFormat::Spdx => crate::sbom::spdx(&lock),
        SbomFormat::CycloneDx => crate::sbom::cyclonedx(&lock),
    };
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(0)
}
