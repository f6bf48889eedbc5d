//! Privileges: what the init keeps, and what a process it starts in the sandbox gets (the
//! sandbox user, the profile's capabilities, no-new-privileges, the seccomp filter last).

use caps::{CapSet, Capability, CapsHashSet};
use stockade_proto::setup::{Setup, SOCK_FILTER_LEN};

use super::Failed;

/// What the init itself needs beyond the profile's capabilities: to cut a child's bounding set
/// (SETPCAP), to make it the sandbox user (SETUID, SETGID), and to end every process of the
/// sandbox whoever runs it (KILL).
const INIT_NEEDS: [Capability; 4] = [
    Capability::CAP_SETPCAP,
    Capability::CAP_SETUID,
    Capability::CAP_SETGID,
    Capability::CAP_KILL,
];

/// Capabilities past the `caps` crate's list, which a newer kernel may know: dropped from the
/// bounding set by number.
const HIGHEST_CAP: u32 = 63;

fn caps_error(what: &str, e: caps::errors::CapsError) -> Failed {
    Failed(format!("{what}: {e}"))
}

/// The capabilities of a mask (bit n = capability n).
pub fn from_mask(mask: u64) -> CapsHashSet {
    caps::all()
        .into_iter()
        .filter(|c| mask & c.bitmask() != 0)
        .collect()
}

fn prctl(option: libc::c_int, arg: libc::c_ulong) -> std::io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(option, arg, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Cuts the bounding set to `keep`; what is dropped can never come back to this process or
/// anything it starts.
fn cut_bounding(keep: &CapsHashSet) -> Result<(), Failed> {
    for cap in caps::all() {
        if !keep.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|e| caps_error("dropping from the bounding set", e))?;
        }
    }
    let known = caps::all().len() as u32;
    for number in known..=HIGHEST_CAP {
        // EINVAL past the kernel's last capability: the end of the list.
        if prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(number)).is_err() {
            break;
        }
    }
    Ok(())
}

/// The init's own privileges once the sandbox is built: non-dumpable (nothing of the sandbox
/// may read its memory or descriptors), no-new-privileges, and only the capabilities it needs
/// to start processes in the sandbox.
pub fn hold(setup: &Setup) -> Result<(), Failed> {
    prctl(libc::PR_SET_DUMPABLE, 0).map_err(|e| Failed::io("PR_SET_DUMPABLE", e))?;
    prctl(libc::PR_SET_NO_NEW_PRIVS, 1).map_err(|e| Failed::io("PR_SET_NO_NEW_PRIVS", e))?;
    let mut keep = from_mask(setup.capabilities);
    keep.extend(INIT_NEEDS);
    cut_bounding(&keep)?;
    caps::clear(None, CapSet::Ambient).map_err(|e| caps_error("clearing the ambient set", e))?;
    caps::clear(None, CapSet::Inheritable)
        .map_err(|e| caps_error("clearing the inheritable set", e))?;
    caps::set(None, CapSet::Effective, &keep).map_err(|e| caps_error("setting caps", e))?;
    caps::set(None, CapSet::Permitted, &keep).map_err(|e| caps_error("setting caps", e))?;
    Ok(())
}

/// Becomes the sandbox user, with the profile's capabilities (as the bounding set; effective
/// and permitted too for uid 0, for which exec keeps them; none for any other uid), and
/// installs the seccomp programs. The caller execs right after: the filter is the last thing
/// applied, so nothing before it needs a syscall it denies.
pub fn sandbox_user(setup: &Setup) -> Result<(), Failed> {
    let granted = from_mask(setup.capabilities);
    cut_bounding(&granted)?;
    caps::clear(None, CapSet::Inheritable)
        .map_err(|e| caps_error("clearing the inheritable set", e))?;
    if setup.user_ns.is_none() {
        let gid = setup.gid;
        // SAFETY: setgroups reads one gid from a valid pointer.
        if unsafe { libc::setgroups(1, &gid) } != 0 {
            return Err(Failed::io("setgroups", std::io::Error::last_os_error()));
        }
        // SAFETY: integer arguments only.
        if unsafe { libc::setresgid(gid, gid, gid) } != 0 {
            return Err(Failed::io("setresgid", std::io::Error::last_os_error()));
        }
        // SAFETY: integer arguments only.
        if unsafe { libc::setresuid(setup.uid, setup.uid, setup.uid) } != 0 {
            return Err(Failed::io("setresuid", std::io::Error::last_os_error()));
        }
    }
    // In a user namespace the uid is already the sandbox's, and the init's capabilities would
    // stay; for another uid the kernel has just cleared them (capabilities(7), "Effect of user
    // ID changes"). Set explicitly either way.
    let kept = if setup.uid == 0 {
        granted
    } else {
        CapsHashSet::new()
    };
    caps::set(None, CapSet::Effective, &kept).map_err(|e| caps_error("setting caps", e))?;
    caps::set(None, CapSet::Permitted, &kept).map_err(|e| caps_error("setting caps", e))?;
    caps::clear(None, CapSet::Ambient).map_err(|e| caps_error("clearing the ambient set", e))?;
    prctl(libc::PR_SET_NO_NEW_PRIVS, 1).map_err(|e| Failed::io("PR_SET_NO_NEW_PRIVS", e))?;
    install_seccomp(&setup.seccomp)
}

/// Installs each program in order (the kernel runs all of them and keeps the strictest
/// answer). No-new-privileges is set, so no capability is needed.
fn install_seccomp(programs: &[Vec<u8>]) -> Result<(), Failed> {
    for (i, program) in programs.iter().enumerate() {
        let filter: Vec<libc::sock_filter> = program
            .chunks_exact(SOCK_FILTER_LEN)
            .map(|c| libc::sock_filter {
                code: u16::from_ne_bytes([c[0], c[1]]),
                jt: c[2],
                jf: c[3],
                k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect();
        let prog = libc::sock_fprog {
            len: filter.len() as libc::c_ushort,
            filter: filter.as_ptr().cast_mut(),
        };
        // SAFETY: `prog` points at `filter`, which outlives the call; the kernel copies it.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0u32,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            let why = if i > 0 && e.raw_os_error() == Some(libc::EPERM) {
                " (a filter installed before it denies seccomp(2) itself)"
            } else {
                ""
            };
            return Err(Failed(format!(
                "installing seccomp filter {} of {}: {e}{why}",
                i + 1,
                programs.len()
            )));
        }
    }
    Ok(())
}
