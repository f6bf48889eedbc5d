//! stockade's base image: built offline from the host's files and loaded into the engine.
//!
//! No registry is ever contacted. The base image is assembled from the host ([`rootfs`]),
//! wrapped in a `docker save` tarball ([`archive`]) and posted to `/images/load`. Any other
//! image must already be present.

mod archive;
mod rootfs;

pub use archive::IMAGE_PATH;

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bollard::query_parameters::{ImportImageOptionsBuilder, RemoveImageOptions};
use bollard::Docker;
use futures_util::StreamExt;
use nix::fcntl::{Flock, FlockArg};

pub use rootfs::RootfsTar;

/// Repository of the base image; the tag is the crate version.
pub const BASE_IMAGE_REPO: &str = "stockade/base";
/// Label holding the stockade version that built the image.
pub const LABEL_BASE: &str = "org.stockade.base";
/// Label holding the layer digest, so a rebuilt-but-identical rootfs is recognisable.
pub const LABEL_ROOTFS: &str = "org.stockade.rootfs-sha256";
/// Label listing the tools added with `image build --include` (comma-separated).
pub const LABEL_INCLUDE: &str = "org.stockade.include";
/// The image's default user: the unprivileged `sandbox` entry of its /etc/passwd.
pub const SANDBOX_USER: &str = "65532:65532";
/// Loading tens of MiB through fuse-overlayfs is slower than any other engine call.
const IMPORT_TIMEOUT: Duration = Duration::from_secs(300);
/// Serialises builds across stockade processes sharing one state directory.
const LOCK_FILE_NAME: &str = "image-build.lock";
const MIB: f64 = 1024.0 * 1024.0;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    #[error("required tool `{name}` not found on the host (searched {searched})")]
    MissingTool { name: String, searched: String },
    #[error("--include {name}: the host has no `{name}` in {searched}; install it on the host (the image is built from the host's files) or leave it out")]
    NotOnHost { name: String, searched: String },
    #[error("--include {name:?}: a tool is named by its file name in /usr/bin or /bin (letters, digits, '.', '-', '_', '+')")]
    BadToolName { name: String },
    #[error("{dir} holds more than {limit} files: too many for a tool's runtime")]
    TooManyFiles { dir: PathBuf, limit: usize },
    #[error("cannot read host file {path}")]
    HostRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot run {ldd}")]
    Ldd {
        ldd: PathBuf,
        source: std::io::Error,
    },
    #[error("the host's loader cannot find `{library}`, needed by {binary}")]
    MissingLibrary { binary: PathBuf, library: String },
    #[error("{path} is neither a regular file, a directory nor a symlink")]
    UnsupportedFileType { path: PathBuf },
    #[error("too many levels of symlinks resolving {path}")]
    SymlinkLoop { path: PathBuf },
    #[error("host file {path} is {size} bytes, over the {limit}-byte cap")]
    FileTooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("the root filesystem exceeds the {limit}-byte cap")]
    RootfsTooLarge { limit: u64 },
    #[error("cannot write the image archive")]
    Archive { source: std::io::Error },
    #[error(
        "image {image} is not present; stockade never pulls. Load it with `docker load` or \
         build it, or use the default base image {default}"
    )]
    NotPresent { image: String, default: String },
    #[error("docker engine: {op} {image} failed")]
    Engine {
        op: &'static str,
        image: String,
        source: bollard::errors::Error,
    },
    #[error("loading {image} into the engine took longer than {} s", timeout.as_secs())]
    ImportTimeout { image: String, timeout: Duration },
    #[error("the engine has {image} as {actual}, expected {expected}")]
    IdMismatch {
        image: String,
        expected: String,
        actual: String,
    },
    #[error("cannot lock {path}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What the image holds beyond the host's files (its users, its layout), revised whenever that
/// changes, so that an image built by an earlier stockade of the same version is not taken for
/// this one's. 2: the sandbox user is 65532 (no host account); stockade's agent is static and
/// mounted, so the image no longer carries the libraries stockade links against.
pub const BASE_IMAGE_REVISION: u32 = 2;

/// `stockade/base:<crate version>-r<revision>`.
pub fn base_image_ref() -> String {
    format!(
        "{BASE_IMAGE_REPO}:{}-r{BASE_IMAGE_REVISION}",
        env!("CARGO_PKG_VERSION")
    )
}

pub use rootfs::valid_tool_name;

/// Assembles the base image's root filesystem from host files (no engine involved), with the
/// `include`d tools and their runtime files.
pub fn build_rootfs(
    include: &[String],
    progress: &mut dyn FnMut(&str),
) -> Result<RootfsTar, ImageError> {
    rootfs::build(include, progress)
}

/// Builds the base image from host files, loads it and returns its id (`sha256:...`).
///
/// The host read is synchronous: it takes well under a second and happens once per machine.
pub async fn build_base_image(
    docker: &Docker,
    include: &[String],
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<String, ImageError> {
    let rootfs = build_rootfs(include, &mut |line| progress(line))?;
    load_base_image(docker, &rootfs, progress).await
}

/// Loads `rootfs` as the base image and returns its id (`sha256:...`).
pub async fn load_base_image(
    docker: &Docker,
    rootfs: &RootfsTar,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<String, ImageError> {
    load_image(docker, rootfs, &base_image_ref(), progress).await
}

/// The image a cluster runs sandboxes from: the base image's files plus stockade's agent at
/// [`CLUSTER_AGENT_PATH`] (a pod has no host bind mounts), tagged with the agent's digest.
pub fn cluster_image_ref() -> String {
    format!(
        "{CLUSTER_IMAGE_REPO}:{}-r{BASE_IMAGE_REVISION}-{}",
        env!("CARGO_PKG_VERSION"),
        &crate::agent::BINARY_SHA256[..12]
    )
}

pub const CLUSTER_IMAGE_REPO: &str = "stockade/cluster";
/// Where the cluster image holds the agent: execute-only, as the agent is mounted elsewhere.
pub const CLUSTER_AGENT_PATH: &str = "/usr/lib/stockade/stockade-agent";

/// The cluster image's root filesystem.
pub fn build_cluster_rootfs(progress: &mut dyn FnMut(&str)) -> Result<RootfsTar, ImageError> {
    rootfs::build_with(
        &[],
        &[(
            CLUSTER_AGENT_PATH,
            crate::agent::BINARY_MODE,
            crate::agent::BINARY,
        )],
        progress,
    )
}

/// The cluster image as a `docker load` archive (for a registry or a node's image store).
pub fn cluster_image_archive(
    progress: &mut dyn FnMut(&str),
) -> Result<(String, Vec<u8>), ImageError> {
    let rootfs = build_cluster_rootfs(progress)?;
    let save = archive::save_tarball(&rootfs, &cluster_image_ref(), env!("CARGO_PKG_VERSION"))
        .map_err(|source| ImageError::Archive { source })?;
    Ok((save.image_id, save.bytes))
}

/// Loads `rootfs` as `image` and returns its id (`sha256:...`).
pub async fn load_image(
    docker: &Docker,
    rootfs: &RootfsTar,
    image: &str,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<String, ImageError> {
    let started = Instant::now();
    let image = image.to_string();
    let with = if rootfs.included.is_empty() {
        String::new()
    } else {
        format!(" with {}", rootfs.included.join(", "))
    };
    progress(&format!(
        "building image {image} from host files{with}: {} files, {:.1} MiB",
        rootfs.files,
        rootfs.tar.len() as f64 / MIB
    ));
    let save = archive::save_tarball(rootfs, &image, env!("CARGO_PKG_VERSION"))
        .map_err(|source| ImageError::Archive { source })?;

    let options = ImportImageOptionsBuilder::default().quiet(true).build();
    let mut stream = docker.import_image(options, bollard::body_full(save.bytes.into()), None);
    let drain = async {
        while let Some(message) = stream.next().await {
            message.map_err(engine_error("load", &image))?;
        }
        Ok::<_, ImageError>(())
    };
    tokio::time::timeout(IMPORT_TIMEOUT, drain)
        .await
        .map_err(|_| ImageError::ImportTimeout {
            image: image.clone(),
            timeout: IMPORT_TIMEOUT,
        })??;

    let inspected = docker
        .inspect_image(&image)
        .await
        .map_err(engine_error("inspect", &image))?;
    let actual = inspected.id.unwrap_or_default();
    if actual != save.image_id {
        return Err(ImageError::IdMismatch {
            image,
            expected: save.image_id,
            actual,
        });
    }
    progress(&format!(
        "imported {actual} in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(actual)
}

/// Makes sure `image` is present: the base image is built if missing (once, under a lock in
/// `state_dir`, so parallel stockade processes do not build it twice); any other missing
/// image is an error, since nothing is ever pulled.
pub async fn ensure_image(
    docker: &Docker,
    image: &str,
    state_dir: &Path,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<(), ImageError> {
    if image_exists(docker, image).await? {
        return Ok(());
    }
    let base = base_image_ref();
    if image != base {
        return Err(ImageError::NotPresent {
            image: image.to_string(),
            default: base,
        });
    }
    let _lock = lock_exclusive(state_dir.join(LOCK_FILE_NAME)).await?;
    // Another process may have built it while this one waited for the lock.
    if image_exists(docker, image).await? {
        return Ok(());
    }
    build_base_image(docker, &[], progress).await.map(drop)
}

/// Removes the base image (if present); containers still using it make this fail.
pub async fn remove_base_image(docker: &Docker) -> Result<(), ImageError> {
    let image = base_image_ref();
    match docker
        .remove_image(&image, None::<RemoveImageOptions>, None)
        .await
    {
        Ok(_)
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(source) => Err(ImageError::Engine {
            op: "remove",
            image,
            source,
        }),
    }
}

fn engine_error(
    op: &'static str,
    image: &str,
) -> impl FnOnce(bollard::errors::Error) -> ImageError {
    let image = image.to_string();
    move |source| ImageError::Engine { op, image, source }
}

async fn image_exists(docker: &Docker, image: &str) -> Result<bool, ImageError> {
    match docker.inspect_image(image).await {
        Ok(_) => Ok(true),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(false),
        Err(source) => Err(engine_error("inspect", image)(source)),
    }
}

/// Blocks (on a worker thread) until the exclusive `flock` on `path` is ours; it is released
/// when the returned value drops, or by the kernel if the process dies mid-build.
async fn lock_exclusive(path: PathBuf) -> Result<Flock<File>, ImageError> {
    let worker_path = path.clone();
    let locked = tokio::task::spawn_blocking(move || {
        if let Some(dir) = worker_path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&worker_path)?;
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| errno.into())
    })
    .await;
    match locked {
        Ok(result) => result.map_err(|source| ImageError::Lock { path, source }),
        Err(join) => Err(ImageError::Lock {
            path,
            source: std::io::Error::other(join),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_image_ref_is_versioned() {
        assert_eq!(
            base_image_ref(),
            format!(
                "stockade/base:{}-r{BASE_IMAGE_REVISION}",
                env!("CARGO_PKG_VERSION")
            )
        );
    }

    #[tokio::test]
    async fn build_lock_is_exclusive_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join(LOCK_FILE_NAME);
        let first = lock_exclusive(path.clone()).await.unwrap();
        let second = tokio::spawn(lock_exclusive(path));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!second.is_finished(), "a second holder got the lock");
        drop(first);
        second.await.unwrap().unwrap();
    }
}
