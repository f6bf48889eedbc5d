//! The native backend's root filesystems: the base image's layer, assembled offline from the
//! host's files exactly as for Docker (the same tar, so the same digest), unpacked once into a
//! directory named by that digest. A sandbox mounts it as the read-only lower layer of an
//! overlay; nothing ever writes to it.
//!
//! ```text
//! IMAGES/layers/<sha256 hex>/     the unpacked layer (content-addressed, never modified)
//! IMAGES/refs/<image ref>         `sha256:<hex>`: which layer the image name means now
//! IMAGES/lock                     serialises builds across stockade processes
//! ```

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use super::NativeError;
use crate::backend::docker::image::{self, RootfsTar};
use crate::state;

const LAYERS: &str = "layers";
const REFS: &str = "refs";
const LOCK: &str = "lock";
/// A ref file is one digest line.
const MAX_REF_BYTES: u64 = 256;

/// A layer ready to mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// `sha256:<hex>` of the layer tar.
    pub digest: String,
    pub path: PathBuf,
}

/// The directory of unpacked images.
#[derive(Debug, Clone)]
pub struct Images {
    dir: PathBuf,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> NativeError + '_ {
    move |source| NativeError::Rootfs {
        path: path.to_path_buf(),
        source,
    }
}

/// A ref's file name: the image reference with `/` and `:` made safe.
fn ref_file(image: &str) -> String {
    image.replace(['/', ':'], "_")
}

impl Images {
    pub fn new(dir: PathBuf) -> Images {
        Images { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The layer `image` names, if it is unpacked.
    pub fn current(&self, image: &str) -> Option<Layer> {
        use std::io::Read;
        let mut text = String::new();
        File::open(self.dir.join(REFS).join(ref_file(image)))
            .ok()?
            .take(MAX_REF_BYTES)
            .read_to_string(&mut text)
            .ok()?;
        let digest = text.trim().to_string();
        let hex = digest.strip_prefix("sha256:")?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let path = self.dir.join(LAYERS).join(hex);
        path.is_dir().then_some(Layer { digest, path })
    }

    /// The base image's layer: the one unpacked, or (on first use) built from the host's
    /// files and unpacked, once, under a lock. Any other image is not something the native
    /// backend can have: it never pulls, and has no engine to export from.
    pub fn ensure(
        &self,
        image: &str,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Layer, NativeError> {
        if let Some(layer) = self.current(image) {
            return Ok(layer);
        }
        if let Some(e) = super::spec::unsupported(&crate::backend::Network::None, image) {
            return Err(e);
        }
        let _lock = self.lock()?;
        if let Some(layer) = self.current(image) {
            return Ok(layer);
        }
        progress(&format!(
            "building the root filesystem of {image} from host files (native backend, once)"
        ));
        let rootfs = image::build_rootfs(&[], progress)?;
        self.install(image, &rootfs)
    }

    /// Builds the base image's layer with `include`d tools and makes it the image's (what
    /// `stockade image build` does for the native backend).
    pub fn build(
        &self,
        include: &[String],
        progress: &mut dyn FnMut(&str),
    ) -> Result<Layer, NativeError> {
        let rootfs = image::build_rootfs(include, progress)?;
        let _lock = self.lock()?;
        self.install(&image::base_image_ref(), &rootfs)
    }

    /// Unpacks `rootfs` (when its digest is not unpacked yet) and points `image` at it.
    pub fn install(&self, image: &str, rootfs: &RootfsTar) -> Result<Layer, NativeError> {
        let hex = rootfs.digest.trim_start_matches("sha256:");
        let layers = self.dir.join(LAYERS);
        let refs = self.dir.join(REFS);
        for dir in [&layers, &refs] {
            state::ensure_private_dir(dir)?;
        }
        let path = layers.join(hex);
        if !path.is_dir() {
            let tmp = layers.join(format!(".unpack-{}", uuid::Uuid::new_v4().simple()));
            let unpacked = unpack(&rootfs.tar, &tmp);
            if let Err(e) = unpacked {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e);
            }
            std::fs::rename(&tmp, &path).map_err(io_error(&path))?;
        }
        let ref_path = refs.join(ref_file(image));
        let tmp = refs.join(format!(".{}.tmp", uuid::Uuid::new_v4().simple()));
        state::write_private_file(&tmp, format!("{}\n", rootfs.digest).as_bytes())?;
        std::fs::rename(&tmp, &ref_path).map_err(io_error(&ref_path))?;
        Ok(Layer {
            digest: rootfs.digest.clone(),
            path,
        })
    }

    fn lock(&self) -> Result<Flock<File>, NativeError> {
        state::ensure_private_dir(&self.dir)?;
        let path = self.dir.join(LOCK);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_error(&path))?;
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| NativeError::Rootfs {
            path,
            source: errno.into(),
        })
    }
}

/// Unpacks a layer tar into `dir` with its modes (and, as root, its owners: the sandbox
/// user's home and /workspace are its own).
fn unpack(tar_bytes: &[u8], dir: &Path) -> Result<(), NativeError> {
    std::fs::create_dir(dir).map_err(io_error(dir))?;
    let mut archive = tar::Archive::new(tar_bytes);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(nix::unistd::geteuid().is_root());
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(false);
    archive.unpack(dir).map_err(io_error(dir))?;
    // The layer's root is the sandbox's `/`: root's, 0755, like an image's.
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .map_err(io_error(dir))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_layer() -> RootfsTar {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, mode) in [("bin", 0o755), ("tmp", 0o1777)] {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_size(0);
            builder.append_data(&mut h, name, std::io::empty()).unwrap();
        }
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(2);
        builder.append_data(&mut h, "bin/sh", &b"#!"[..]).unwrap();
        let tar = builder.into_inner().unwrap();
        use sha2::Digest;
        RootfsTar {
            digest: format!("sha256:{}", hex::encode(sha2::Sha256::digest(&tar))),
            tar,
            files: 1,
            entries: 3,
            skipped: Vec::new(),
            included: Vec::new(),
        }
    }

    #[test]
    fn a_layer_is_unpacked_once_by_digest_and_the_ref_points_at_it() {
        let dir = tempfile::tempdir().unwrap();
        let images = Images::new(dir.path().join("images"));
        assert_eq!(images.current("stockade/base:x"), None);
        let layer = images.install("stockade/base:x", &tiny_layer()).unwrap();
        assert_eq!(images.current("stockade/base:x"), Some(layer.clone()));
        assert_eq!(std::fs::read(layer.path.join("bin/sh")).unwrap(), b"#!");
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&layer.path.join("tmp")), 0o1777);
        assert_eq!(mode(&layer.path), 0o755);
        // Installing the same layer again reuses the directory.
        let again = images.install("stockade/base:x", &tiny_layer()).unwrap();
        assert_eq!(again, layer);
        assert_eq!(
            std::fs::read_dir(dir.path().join("images/layers"))
                .unwrap()
                .count(),
            1
        );
    }

    #[test]
    fn another_image_is_an_error_naming_the_option() {
        let dir = tempfile::tempdir().unwrap();
        let images = Images::new(dir.path().to_path_buf());
        let err = images
            .ensure("python:3.12", &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("image") && err.contains("--backend docker"),
            "{err}"
        );
    }
}
