//! The image config and the `docker save`-format tarball that `POST /images/load` takes.
//!
//! Assembling the tarball ourselves (rather than `docker import` with `changes`) sets every
//! config field, and keeps the image id (the sha256 of the config) reproducible.

use serde_json::json;
use sha2::{Digest, Sha256};

use super::rootfs::RootfsTar;
use super::{LABEL_BASE, LABEL_ROOTFS, SANDBOX_USER};

/// `created` of the image and its one history entry: fixed, so the image id is reproducible.
const FIXED_CREATED: &str = "1970-01-01T00:00:00Z";
/// The image's `PATH` (its config's `Env`), which the native backend gives its agent too.
pub const IMAGE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const WORKING_DIR: &str = "/workspace";

/// A tarball ready for `/images/load`, and the id the engine will give the image.
pub(crate) struct SaveTarball {
    pub bytes: Vec<u8>,
    pub image_id: String,
}

/// Go's `GOARCH` for this build's architecture, as the image config expects.
fn oci_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The image config JSON (OCI image config, as `docker save` writes it).
pub(crate) fn image_config(rootfs_digest: &str, version: &str, included: &[String]) -> Vec<u8> {
    let config = json!({
        "architecture": oci_architecture(),
        "os": "linux",
        "created": FIXED_CREATED,
        "config": {
            "Env": [format!("PATH={IMAGE_PATH}")],
            "Cmd": ["/bin/bash"],
            "WorkingDir": WORKING_DIR,
            "User": SANDBOX_USER,
            "Labels": {
                LABEL_BASE: version,
                LABEL_ROOTFS: rootfs_digest,
                super::LABEL_INCLUDE: included.join(","),
            },
        },
        "rootfs": { "type": "layers", "diff_ids": [rootfs_digest] },
        "history": [{
            "created": FIXED_CREATED,
            "created_by": format!("stockade {version}: root filesystem assembled from host files"),
        }],
    });
    // serde_json's map is sorted by key, so the bytes (and the id) are stable.
    config.to_string().into_bytes()
}

/// Wraps the layer into a `docker save` tarball: `manifest.json`, `<id>.json`, `<layer>/layer.tar`.
pub(crate) fn save_tarball(
    rootfs: &RootfsTar,
    tag: &str,
    version: &str,
) -> std::io::Result<SaveTarball> {
    let config = image_config(&rootfs.digest, version, &rootfs.included);
    let config_hex = hex::encode(Sha256::digest(&config));
    let layer_hex = rootfs.digest.trim_start_matches("sha256:");
    let config_name = format!("{config_hex}.json");
    let layer_name = format!("{layer_hex}/layer.tar");
    let manifest = json!([{ "Config": config_name, "RepoTags": [tag], "Layers": [layer_name] }]);
    let manifest = manifest.to_string().into_bytes();

    let mut builder = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    dir.set_mtime(super::rootfs::FIXED_MTIME);
    builder.append_data(&mut dir, format!("{layer_hex}/"), std::io::empty())?;
    for (name, data) in [
        (layer_name.as_str(), rootfs.tar.as_slice()),
        (config_name.as_str(), config.as_slice()),
        ("manifest.json", manifest.as_slice()),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        header.set_mtime(super::rootfs::FIXED_MTIME);
        builder.append_data(&mut header, name, data)?;
    }
    Ok(SaveTarball {
        bytes: builder.into_inner()?,
        image_id: format!("sha256:{config_hex}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn fake_rootfs() -> RootfsTar {
        let tar = vec![0u8; 1024];
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&tar)));
        RootfsTar {
            tar,
            digest,
            files: 0,
            entries: 0,
            skipped: Vec::new(),
            included: Vec::new(),
        }
    }

    #[test]
    fn config_carries_metadata_and_diff_id() {
        let config: serde_json::Value =
            serde_json::from_slice(&image_config("sha256:abc", "9.9.9", &[])).unwrap();
        assert_eq!(config["config"]["User"], "65532:65532");
        assert_eq!(config["config"]["WorkingDir"], "/workspace");
        assert_eq!(config["config"]["Cmd"], json!(["/bin/bash"]));
        assert_eq!(config["config"]["Env"][0], format!("PATH={IMAGE_PATH}"));
        assert_eq!(config["config"]["Labels"][LABEL_BASE], "9.9.9");
        assert_eq!(config["config"]["Labels"][LABEL_ROOTFS], "sha256:abc");
        assert_eq!(config["rootfs"]["diff_ids"], json!(["sha256:abc"]));
    }

    #[test]
    fn tarball_manifest_points_at_its_members_and_id_is_config_digest() {
        let rootfs = fake_rootfs();
        let save = save_tarball(&rootfs, "stockade/base:9.9.9", "9.9.9").unwrap();
        let mut members = std::collections::BTreeMap::new();
        let mut archive = tar::Archive::new(save.bytes.as_slice());
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            members.insert(name, data);
        }
        let manifest: serde_json::Value =
            serde_json::from_slice(&members["manifest.json"]).unwrap();
        let config_name = manifest[0]["Config"].as_str().unwrap();
        let layer_name = manifest[0]["Layers"][0].as_str().unwrap();
        assert_eq!(manifest[0]["RepoTags"], json!(["stockade/base:9.9.9"]));
        assert_eq!(members[layer_name], rootfs.tar);
        let config = &members[config_name];
        assert_eq!(
            save.image_id,
            format!("sha256:{}", hex::encode(Sha256::digest(config)))
        );
        assert_eq!(
            save_tarball(&rootfs, "stockade/base:9.9.9", "9.9.9")
                .unwrap()
                .bytes,
            save.bytes
        );
    }
}
