//! Bit-for-bit reproducible images: the engine's build is exported (`docker save`), each layer
//! above the base re-written like the base's rootfs (see `rootfs::normalize_layer`), the image
//! config re-written without anything of the build's time or containers, and loaded back. The
//! same commit and archive state then give the same image id on any run, state directory or
//! cache state — and, pushed by the same engine, the same registry digest.

use super::base::{load_image, rfc3339};
use super::rootfs::normalize_layer;
use anyhow::{anyhow, bail, Context, Result};
use bollard::Docker;
use futures_util::StreamExt;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What makes a build reproducible: the archive's epoch, the base it starts from and a
/// scratch directory.
#[derive(Debug, Clone)]
pub struct Reproducible {
    /// `SOURCE_DATE_EPOCH`: the archive's InRelease `Date` (as for the base).
    pub epoch: i64,
    /// The base image id: its layers are reproducible already and are kept as they are.
    pub base_id: String,
    /// Where the exported image and the re-written layers go (emptied after use).
    pub work_dir: PathBuf,
}

/// The build's image `built` made reproducible and loaded, tagged `tag`; returns its id.
pub(super) async fn normalize_image(
    docker: &Docker,
    built: &str,
    tag: &str,
    r: &Reproducible,
) -> Result<String> {
    let dir = r.work_dir.join("normalize");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let result = normalize_in(docker, built, tag, r, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn normalize_in(
    docker: &Docker,
    built: &str,
    tag: &str,
    r: &Reproducible,
    dir: &Path,
) -> Result<String> {
    // docker save of the built image, unpacked: manifest.json, <config>.json, <id>/layer.tar.
    let saved = dir.join("saved");
    {
        let export = dir.join("export.tar");
        let mut f = std::io::BufWriter::new(std::fs::File::create(&export)?);
        let mut stream = docker.export_image(built);
        while let Some(chunk) = stream.next().await {
            f.write_all(&chunk.with_context(|| format!("cannot export {built}"))?)?;
        }
        f.flush()?;
        drop(f);
        let saved = saved.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            tar::Archive::new(std::io::BufReader::new(std::fs::File::open(&export)?))
                .unpack(&saved)?;
            let _ = std::fs::remove_file(&export);
            Ok(())
        })
        .await
        .context("export task failed")?
        .with_context(|| format!("cannot unpack the export of {built}"))?;
    }
    let manifest: Value = serde_json::from_slice(&std::fs::read(saved.join("manifest.json"))?)
        .context("the export's manifest.json")?;
    let entry = &manifest[0];
    let (Some(config_file), Some(layer_files)) =
        (entry["Config"].as_str(), entry["Layers"].as_array())
    else {
        bail!("the export of {built} has no Config/Layers in manifest.json");
    };
    let engine_config = std::fs::read(saved.join(config_file))?;
    let diff_ids: Vec<String> = serde_json::from_slice::<Value>(&engine_config)?["rootfs"]
        ["diff_ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if diff_ids.len() != layer_files.len() {
        bail!(
            "the export of {built}: {} layers, {} diff ids",
            layer_files.len(),
            diff_ids.len()
        );
    }
    let base_layers = docker
        .inspect_image(&r.base_id)
        .await
        .with_context(|| format!("base image {}", r.base_id))?
        .root_fs
        .and_then(|f| f.layers)
        .unwrap_or_default();

    let mut layers: Vec<(String, PathBuf)> = Vec::new();
    let mut shared = 0;
    for (n, (file, diff_id)) in layer_files.iter().zip(&diff_ids).enumerate() {
        let raw = saved.join(file.as_str().ok_or_else(|| anyhow!("bad layer path"))?);
        if n < base_layers.len() && base_layers[..=n] == diff_ids[..=n] {
            // The base's own layers: reproducible already, shared with every image on it.
            layers.push((diff_id.trim_start_matches("sha256:").to_string(), raw));
            shared = n + 1;
            continue;
        }
        let out = dir.join(format!("layer-{n}.tar"));
        let (raw2, out2, epoch) = (raw.clone(), out.clone(), r.epoch);
        let sha = tokio::task::spawn_blocking(move || normalize_layer(&raw2, &out2, epoch))
            .await
            .context("layer task failed")?
            .with_context(|| format!("layer {n} of {built}"))?;
        let _ = std::fs::remove_file(&raw);
        layers.push((sha, out));
    }
    let new_diff_ids: Vec<String> = layers.iter().map(|(s, _)| format!("sha256:{s}")).collect();
    let config = image_config(&engine_config, &new_diff_ids, r.epoch)?;
    let what = format!("image {tag}");
    // The engine has the base's layers: sending them again costs more than the re-writing.
    let lean: Vec<(String, Option<PathBuf>)> = layers
        .iter()
        .enumerate()
        .map(|(n, (sha, path))| (sha.clone(), (n >= shared).then(|| path.clone())))
        .collect();
    match load_image(
        docker,
        config.clone(),
        &lean,
        &[tag.to_string()],
        dir,
        &what,
    )
    .await
    {
        Ok(id) => Ok(id),
        Err(e) if shared > 0 => {
            tracing::info!("{what}: loading without the base's layers failed ({e:#}); with them");
            let full: Vec<(String, Option<PathBuf>)> =
                layers.into_iter().map(|(s, p)| (s, Some(p))).collect();
            load_image(docker, config, &full, &[tag.to_string()], dir, &what).await
        }
        Err(e) => Err(e),
    }
}

/// The engine's image config without what depends on the run: `created` and every history
/// entry's time are the epoch; the builder's container (`container`, `container_config`),
/// the engine version, the step's hostname and intermediate parent image (`config.Hostname`,
/// `config.Image`) are dropped; the diff ids are the re-written layers'. Keys come out sorted.
fn image_config(engine_config: &[u8], diff_ids: &[String], epoch: i64) -> Result<Vec<u8>> {
    let mut config: Value =
        serde_json::from_slice(engine_config).context("the engine's image config")?;
    let created = Value::String(rfc3339(epoch)?);
    let obj = config
        .as_object_mut()
        .ok_or_else(|| anyhow!("the engine's image config is not an object"))?;
    obj.insert("created".into(), created.clone());
    for key in [
        "container",
        "container_config",
        "docker_version",
        "parent",
        "id",
    ] {
        obj.remove(key);
    }
    if let Some(run) = obj.get_mut("config").and_then(Value::as_object_mut) {
        run.remove("Hostname");
        run.remove("Image");
    }
    if let Some(history) = obj.get_mut("history").and_then(Value::as_array_mut) {
        for h in history.iter_mut().filter_map(Value::as_object_mut) {
            h.insert("created".into(), created.clone());
        }
    }
    let rootfs = obj
        .entry("rootfs")
        .or_insert_with(|| serde_json::json!({"type": "layers"}));
    rootfs["diff_ids"] = serde_json::json!(diff_ids);
    // serde_json's map is sorted (no preserve_order), so equal configs give equal bytes.
    Ok(serde_json::to_vec(&config)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_keeps_nothing_of_the_run() {
        // An engine 20.10 classic-builder config, shortened.
        let engine = br##"{"architecture":"amd64","config":{"Hostname":"","Env":["PATH=/bin"],"Cmd":["bash"],"Image":"sha256:1111","Labels":{"a":"b"}},"container":"0b5c0f","container_config":{"Hostname":"0b5c0f","Cmd":["/bin/sh","-c","#(nop) LABEL a=b"]},"created":"2026-11-29T19:00:01.123456789Z","docker_version":"20.10.24+dfsg1","history":[{"created":"2025-11-08T09:53:12Z","created_by":"rebake: mmdebstrap"},{"created":"2026-11-29T19:00:00.5Z","created_by":"/bin/sh -c apt-get update"},{"created":"2026-11-29T19:00:01Z","created_by":"/bin/sh -c #(nop)  LABEL a=b","empty_layer":true}],"os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:aa","sha256:bb"]}}"##;
        let ids = vec!["sha256:aa".to_string(), "sha256:cc".to_string()];
        let out = image_config(engine, &ids, 1_762_595_592).unwrap();
        let text = String::from_utf8(out.clone()).unwrap();
        for gone in [
            "0b5c0f",
            "20.10",
            "sha256:1111",
            "2026-",
            "sha256:bb",
            "Hostname",
        ] {
            assert!(!text.contains(gone), "{gone} in {text}");
        }
        assert_eq!(
            text.matches("\"created\":\"2025-11-08T09:53:12Z\"").count(),
            4
        );
        assert!(
            text.contains("\"diff_ids\":[\"sha256:aa\",\"sha256:cc\"]"),
            "{text}"
        );
        assert!(text.contains("\"empty_layer\":true"), "{text}");
        assert!(text.contains("\"Labels\":{\"a\":\"b\"}"), "{text}");
    }
}
