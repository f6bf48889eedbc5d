//! The mount namespace: the image under an overlay, the host's steps, the control socket, the
//! pivot into the new root.

use std::ffi::{CStr, CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use stockade_proto::setup::{Setup, Step};

use super::namespaces::c_string;
use super::Failed;

/// Mount flags `statvfs` reports that a read-only remount must keep (a bind remount that drops
/// a flag locked by a user namespace is refused): ST_* and MS_* share these values but RELATIME.
const KEPT: &[(u64, u64)] = &[
    (libc::ST_NOSUID, libc::MS_NOSUID),
    (libc::ST_NODEV, libc::MS_NODEV),
    (libc::ST_NOEXEC, libc::MS_NOEXEC),
    (libc::ST_NOATIME, libc::MS_NOATIME),
    (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
    (libc::ST_RELATIME, libc::MS_RELATIME),
];

fn path(bytes: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(bytes))
}

fn mount(
    source: &CStr,
    target: &Path,
    fstype: Option<&CStr>,
    flags: u64,
    data: Option<&CStr>,
) -> Result<(), Failed> {
    let target_c = c_string(target.as_os_str().as_bytes())?;
    // SAFETY: every pointer is a NUL-terminated string that outlives the call, or null.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target_c.as_ptr(),
            fstype.map_or(std::ptr::null(), CStr::as_ptr),
            flags as libc::c_ulong,
            data.map_or(std::ptr::null(), |d| d.as_ptr().cast()),
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        let what = fstype.map_or("bind".into(), |f| f.to_string_lossy().into_owned());
        return Err(Failed(format!(
            "cannot mount {what} ({}) on {}: {e}",
            source.to_string_lossy(),
            target.display()
        )));
    }
    Ok(())
}

fn mkdir_all(dir: &Path) -> Result<(), Failed> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| Failed::io(format!("mkdir {}", dir.display()), e))
}

/// A file to bind something over (the parent created as needed).
fn touch(file: &Path) -> Result<(), Failed> {
    if let Some(parent) = file.parent() {
        mkdir_all(parent)?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(file)
    {
        Ok(_) => Ok(()),
        // A mount point that is already a file of the image (or a node) is used as it is.
        Err(_) if std::fs::symlink_metadata(file).is_ok() => Ok(()),
        Err(e) => Err(Failed::io(format!("creating {}", file.display()), e)),
    }
}

/// Remounts `target`'s mount read-only, keeping the flags it has.
fn remount_read_only(target: &Path) -> Result<(), Failed> {
    let target_c = c_string(target.as_os_str().as_bytes())?;
    // SAFETY: statvfs fills a plain struct for a NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statvfs(target_c.as_ptr(), &mut st) } != 0 {
        return Err(Failed::io(
            format!("statvfs {}", target.display()),
            std::io::Error::last_os_error(),
        ));
    }
    let kept = KEPT
        .iter()
        .filter(|(st_flag, _)| st.f_flag & st_flag != 0)
        .fold(0, |flags, (_, ms)| flags | ms);
    mount(
        c"none",
        target,
        None,
        libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | kept,
        None,
    )
}

/// The overlay root: a tmpfs on the staging directory holds its upper layer and work
/// directory (so the image on the host is never written, and a writable root costs memory of
/// the sandbox's cgroup, not disk), and the merged tree is the new root.
fn overlay_root(setup: &Setup) -> Result<PathBuf, Failed> {
    let staging = path(&setup.root.staging);
    let size = CString::new(format!(
        "size={},mode=0700",
        setup.root.size_bytes.max(1 << 20)
    ))
    .map_err(|_| Failed("bad size".into()))?;
    mount(
        c"stockade-root",
        staging,
        Some(c"tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some(&size),
    )?;
    let (upper, work, merged) = (
        staging.join("upper"),
        staging.join("work"),
        staging.join("merged"),
    );
    for dir in [&upper, &work, &merged] {
        mkdir_all(dir)?;
    }
    // The upper layer's root is the image root's owner and mode (root, 0755), so the merged
    // root looks like the image's.
    let _ = std::fs::set_permissions(&upper, std::fs::Permissions::from_mode(0o755));
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        path(&setup.root.lower).display(),
        upper.display(),
        work.display()
    );
    let options = CString::new(options).map_err(|_| Failed("a path holds a NUL byte".into()))?;
    mount(
        c"stockade-rootfs",
        &merged,
        Some(c"overlay"),
        libc::MS_NODEV,
        Some(&options),
    )
    .map_err(|Failed(why)| {
        Failed(format!(
            "{why} (the native backend needs overlayfs; in a user namespace, Linux 5.11 or newer)"
        ))
    })?;
    Ok(merged)
}

/// `target` (a path inside the sandbox) under the new root.
fn under(root: &Path, target: &[u8]) -> PathBuf {
    root.join(path(target).strip_prefix("/").unwrap_or(path(target)))
}

fn run_step(root: &Path, step: &Step) -> Result<(), Failed> {
    match step {
        Step::Mount {
            source,
            target,
            fstype,
            flags,
            data,
        } => {
            let at = under(root, target);
            mkdir_all(&at)?;
            let data = (!data.is_empty()).then(|| c_string(data)).transpose()?;
            mount(
                &c_string(source)?,
                &at,
                Some(&c_string(fstype)?),
                *flags,
                data.as_deref(),
            )
        }
        Step::Bind {
            source,
            target,
            read_only,
        } => {
            let at = under(root, target);
            let meta = std::fs::metadata(path(source))
                .map_err(|e| Failed::io(format!("bind source {}", path(source).display()), e))?;
            if meta.is_dir() {
                mkdir_all(&at)?;
            } else {
                touch(&at)?;
            }
            mount(
                &c_string(source)?,
                &at,
                None,
                libc::MS_BIND | libc::MS_REC,
                None,
            )?;
            if *read_only {
                remount_read_only(&at)?;
            }
            Ok(())
        }
        Step::Mask { target } => {
            let at = under(root, target);
            match std::fs::symlink_metadata(&at) {
                Err(_) => Ok(()),
                Ok(m) if m.is_dir() => mount(
                    c"tmpfs",
                    &at,
                    Some(c"tmpfs"),
                    libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    None,
                ),
                Ok(_) => mount(c"/dev/null", &at, None, libc::MS_BIND, None),
            }
        }
        Step::ReadOnly { target } => {
            let at = under(root, target);
            if std::fs::symlink_metadata(&at).is_err() {
                return Ok(());
            }
            let at_c = c_string(at.as_os_str().as_bytes())?;
            mount(&at_c, &at, None, libc::MS_BIND | libc::MS_REC, None)?;
            remount_read_only(&at)
        }
        Step::RemountReadOnly { target } => remount_read_only(&under(root, target)),
        Step::Symlink { target, to } => {
            let at = under(root, target);
            if let Some(parent) = at.parent() {
                mkdir_all(parent)?;
            }
            std::os::unix::fs::symlink(path(to), &at)
                .map_err(|e| Failed::io(format!("symlink {}", at.display()), e))
        }
        Step::Device {
            target,
            major,
            minor,
            mode,
        } => {
            let at = under(root, target);
            if let Some(parent) = at.parent() {
                mkdir_all(parent)?;
            }
            let at_c = c_string(at.as_os_str().as_bytes())?;
            let device = libc::makedev(*major, *minor);
            // SAFETY: mknod with a NUL-terminated path and integer arguments.
            if unsafe { libc::mknod(at_c.as_ptr(), libc::S_IFCHR | *mode, device) } != 0 {
                return Err(Failed::io(
                    format!("mknod {}", at.display()),
                    std::io::Error::last_os_error(),
                ));
            }
            // The umask applied to mknod's mode; the node gets exactly the one asked for.
            std::fs::set_permissions(&at, std::fs::Permissions::from_mode(*mode))
                .map_err(|e| Failed::io(format!("chmod {}", at.display()), e))
        }
    }
}

/// The control socket, bound while the host's filesystem is still this process's: only the
/// host's user reaches its directory, and after the pivot nothing in the sandbox can name it.
fn bind_control(setup: &Setup) -> Result<UnixListener, Failed> {
    let at = path(&setup.control);
    let _ = std::fs::remove_file(at);
    let listener =
        UnixListener::bind(at).map_err(|e| Failed::io(format!("bind {}", at.display()), e))?;
    std::fs::set_permissions(at, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Failed::io(format!("chmod {}", at.display()), e))?;
    Ok(listener)
}

/// `pivot_root(".", ".")` then a lazy unmount of the old root stacked on the new one: no
/// directory of the old root is left to name (as runc does).
fn pivot(root: &Path) -> Result<(), Failed> {
    std::env::set_current_dir(root)
        .map_err(|e| Failed::io(format!("chdir {}", root.display()), e))?;
    let dot = c".";
    // SAFETY: pivot_root with two NUL-terminated paths.
    if unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) } != 0 {
        return Err(Failed::io("pivot_root", std::io::Error::last_os_error()));
    }
    // SAFETY: umount2 with a NUL-terminated path and a constant flag.
    if unsafe { libc::umount2(dot.as_ptr(), libc::MNT_DETACH) } != 0 {
        return Err(Failed::io(
            "unmounting the old root",
            std::io::Error::last_os_error(),
        ));
    }
    std::env::set_current_dir("/").map_err(|e| Failed::io("chdir /", e))
}

/// Builds the mount namespace and pivots into it; returns the control listener.
pub fn build(setup: &Setup) -> Result<UnixListener, Failed> {
    // Nothing mounted from here on propagates to the host.
    mount(
        c"none",
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )?;
    let root = overlay_root(setup)?;
    for step in &setup.steps {
        run_step(&root, step)?;
    }
    let listener = bind_control(setup)?;
    pivot(&root)?;
    Ok(listener)
}
