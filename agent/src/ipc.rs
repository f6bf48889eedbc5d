//! System V IPC objects and POSIX message queues a command leaves behind. They outlive the
//! processes that made them and keep their memory charged to the sandbox's cgroup, so a
//! command that leaves 480 MiB of shared memory would have every later command of the session
//! killed for memory it never used. The agent removes those its user owns or created after
//! every command, as it ends the processes.

use crate::sys;

/// A `/proc/sysvipc/*` table: which column holds the id, and the owner and creator uids.
fn owned_ids(table: &str, id_column: &str, uid: u32) -> Vec<i32> {
    let Ok(text) = std::fs::read_to_string(format!("/proc/sysvipc/{table}")) else {
        return Vec::new();
    };
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let columns: Vec<&str> = header.split_whitespace().collect();
    let at = |name: &str| columns.iter().position(|c| *c == name);
    let (Some(id), Some(owner), Some(creator)) = (at(id_column), at("uid"), at("cuid")) else {
        return Vec::new();
    };
    lines
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let mine = |i: usize| fields.get(i).and_then(|v| v.parse::<u32>().ok()) == Some(uid);
            (mine(owner) || mine(creator))
                .then(|| fields.get(id)?.parse().ok())
                .flatten()
        })
        .collect()
}

/// Removes what this user's commands left; returns how many objects went.
pub fn remove_leftovers() -> u32 {
    let uid = sys::geteuid();
    let mut removed = 0;
    for id in owned_ids("shm", "shmid", uid) {
        // SAFETY: IPC_RMID with a null buffer.
        if unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) } == 0 {
            removed += 1;
        }
    }
    for id in owned_ids("sem", "semid", uid) {
        // SAFETY: IPC_RMID takes no fourth argument.
        if unsafe { libc::semctl(id, 0, libc::IPC_RMID) } == 0 {
            removed += 1;
        }
    }
    for id in owned_ids("msg", "msqid", uid) {
        // SAFETY: IPC_RMID with a null buffer.
        if unsafe { libc::msgctl(id, libc::IPC_RMID, std::ptr::null_mut()) } == 0 {
            removed += 1;
        }
    }
    if let Ok(queues) = std::fs::read_dir("/dev/mqueue") {
        use std::os::unix::fs::MetadataExt;
        for queue in queues.flatten() {
            let owned = queue.metadata().is_ok_and(|m| m.uid() == uid);
            if owned && std::fs::remove_file(queue.path()).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}
