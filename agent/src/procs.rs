//! Finding and ending the sandbox user's processes.
//!
//! The rule is the one stockade applies everywhere in a container: every process the agent's
//! user may signal, except PID 1 (the engine's init, or the agent itself in a one-shot sandbox
//! it was started in), the keeper (the oldest root child of PID 1, which keeps a session's
//! container up) and the agent itself. For a non-root user `kill(-1, sig)`
//! reaches all of them in one system call, under the kernel's task list lock, so a fork bomb
//! cannot slip a child past it (kill(2); kernel/signal.c `kill_something_info`; a fork that
//! races the signal is restarted, kernel/fork.c `copy_process`).
//!
//! Whether anything of a command is left is asked of the kernel, not of a scan: the agent is a
//! child subreaper (PR_SET_CHILD_SUBREAPER), so everything a command starts, however it
//! detaches (`setsid`, double forks, `nohup`), stays its descendant, and "no child left"
//! (waitpid's ECHILD) is exact. A scan of /proc cannot answer it: a bomb whose processes each
//! fork and exit at once may have none of the pids a scan listed still alive by the time it
//! reads them, while their children were born after the listing. (Nor can `kill(-1, 0)`: it
//! succeeds whenever any other process exists, even one it may not signal.) The scan remains
//! for what is not the agent's descendant: what a dead agent or a `docker exec` left.
//!
//! Nothing here forks: under a fork bomb no pid is free.

use std::time::{Duration, Instant};

use crate::sys;

/// Between checks while processes are ending.
pub const POLL: Duration = Duration::from_millis(20);
/// After KILL, how long to keep sending it and checking: KILL is delivered when a process is
/// next scheduled, which under CPU pressure takes a moment.
pub const KILL_CONFIRM: Duration = Duration::from_secs(2);
/// Processes read per scan at most (the pids limit is far lower).
const MAX_SCAN: usize = 1 << 16;

struct Proc {
    pid: i32,
    ppid: i32,
    alive: bool,
}

/// `/proc/<pid>/stat`: `pid (comm) state ppid ...`; comm may hold spaces and parentheses, so
/// the fields are read after the last `)`. A zombie leader whose other threads still run (its
/// main thread called `exit` alone) is alive: `/proc/<pid>/task` lists them.
fn read_stat(pid: i32) -> Option<Proc> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    let ppid = fields.next()?.parse().ok()?;
    let alive = match state {
        "Z" => std::fs::read_dir(format!("/proc/{pid}/task")).is_ok_and(|t| t.count() > 1),
        "X" | "x" => false,
        _ => true,
    };
    Some(Proc { pid, ppid, alive })
}

/// The real uid of `pid`, from `/proc/<pid>/status` (the directory's owner is root for a
/// process that is not dumpable, whoever runs it).
fn real_uid(pid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The processes /proc shows; `None` when /proc cannot be read (for example when descriptors
/// run out), which callers treat as "something may be left", never as "nothing".
fn processes() -> Option<Vec<Proc>> {
    let entries = std::fs::read_dir("/proc").ok()?;
    Some(
        entries
            .flatten()
            .take(MAX_SCAN)
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter_map(read_stat)
            .collect(),
    )
}

/// Which processes are spared, and how the rest are found.
#[derive(Debug, Clone, Copy)]
pub struct Spared {
    me: i32,
    keeper: Option<i32>,
    root: bool,
    /// The agent is a subreaper: its children are exactly what is left of its commands.
    reaper: bool,
    /// Also look for processes that are not the agent's descendants (what a dead agent or a
    /// `docker exec` left), by scan.
    strangers: bool,
}

impl Spared {
    /// For a process that is not a subreaper (`stockade-agent kill`).
    pub fn find() -> Spared {
        // The keeper runs as root: in a one-shot sandbox whose first process is the agent
        // itself, the children of PID 1 are commands, and none of them is spared.
        let keeper = processes()
            .unwrap_or_default()
            .iter()
            .filter(|p| p.ppid == 1 && real_uid(p.pid) == Some(0))
            .map(|p| p.pid)
            .min();
        Spared {
            me: std::process::id() as i32,
            keeper,
            root: sys::geteuid() == 0,
            reaper: false,
            strangers: true,
        }
    }

    /// For the agent, which made itself a subreaper with [`become_subreaper`]: what is left of
    /// its commands is its children.
    pub fn for_reaper() -> Spared {
        Spared {
            reaper: true,
            strangers: false,
            ..Spared::find()
        }
    }

    /// The same, and also whatever else of this user runs (before a command starts).
    pub fn with_strangers(self) -> Spared {
        Spared {
            strangers: true,
            ..self
        }
    }

    /// Live processes this user may signal, except the spared ones (a scan: see the module
    /// documentation for what it cannot see); `None` when /proc cannot be read.
    pub fn others(&self) -> Option<Vec<i32>> {
        Some(
            processes()?
                .into_iter()
                .filter(|p| p.alive && p.pid != 1 && p.pid != self.me && Some(p.pid) != self.keeper)
                .filter(|p| sys::kill(p.pid, 0).is_ok())
                .map(|p| p.pid)
                .collect(),
        )
    }

    /// How many [`Self::others`] there are, at least `floor` (a scan may miss some).
    pub fn count_others(&self, floor: u32) -> u32 {
        self.others().map_or(floor, |o| (o.len() as u32).max(floor))
    }

    /// Whether anything is left: for the agent, whether it has a child (reaping what exited);
    /// otherwise, what a scan sees.
    pub fn any_left(&self, reaped: &mut Reaped) -> bool {
        if self.reaper {
            reaped.reap();
            if reaped.has_children {
                return true;
            }
        }
        self.strangers && !matches!(self.others(), Some(o) if o.is_empty())
    }

    /// Sends `signal` to every other process of this user.
    pub fn signal_all(&self, signal: i32) {
        if !self.root {
            let _ = sys::kill(-1, signal);
            return;
        }
        // Root may signal the keeper, so each process is signalled by name; the KILL loop
        // repeats this until nothing is left, which catches what was born in between.
        for pid in self.others().unwrap_or_default() {
            let _ = sys::kill(pid, signal);
        }
    }

    /// The last word of every ending: KILL to whatever of this user is left, seen or not (a
    /// process hiding from the scan is not hidden from `kill(-1)`).
    pub fn kill_unseen(&self) {
        self.signal_all(libc::SIGKILL);
    }
}

/// Makes this process the reaper of every orphan among its descendants.
pub fn become_subreaper() -> std::io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The agent's children as waitpid reports them: the watched child's status when it exits,
/// every other exited descendant reaped (zombies hold pids).
#[derive(Debug, Default)]
pub struct Reaped {
    /// The command's own process, whose status is kept.
    pub watched: Option<i32>,
    pub watched_status: Option<i32>,
    pub has_children: bool,
}

impl Reaped {
    pub fn watching(pid: Option<i32>) -> Reaped {
        Reaped {
            watched: pid,
            watched_status: None,
            has_children: true,
        }
    }

    /// Reaps every child that exited; notes whether any is left.
    pub fn reap(&mut self) {
        loop {
            let mut status = 0;
            // SAFETY: waitpid with a valid pointer to an int.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid > 0 {
                if Some(pid) == self.watched {
                    self.watched_status = Some(status);
                }
                continue;
            }
            // 0: children left, none exited; -1 (ECHILD): none left.
            self.has_children = pid == 0;
            return;
        }
    }
}

/// Ending every other process: TERM, up to `grace` for them to go, then KILL until none is
/// left or [`KILL_CONFIRM`] passed. Driven by [`Ending::step`], so a caller can keep reading
/// output while it runs.
#[derive(Debug)]
pub struct Ending {
    spared: Spared,
    phase: Phase,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Grace { until: Instant },
    Killing { until: Instant },
    Done { complete: bool },
}

impl Ending {
    /// Sends TERM and starts the grace period.
    pub fn start(spared: Spared, grace: Duration) -> Ending {
        spared.signal_all(libc::SIGTERM);
        Ending {
            spared,
            phase: Phase::Grace {
                until: Instant::now() + grace,
            },
        }
    }

    /// Checks progress; `Some(complete)` once finished.
    pub fn step(&mut self, reaped: &mut Reaped) -> Option<bool> {
        let now = Instant::now();
        match self.phase {
            Phase::Done { complete } => return Some(complete),
            Phase::Grace { until } => {
                if !self.spared.any_left(reaped) {
                    self.phase = Phase::Done { complete: true };
                } else if now >= until {
                    self.spared.signal_all(libc::SIGKILL);
                    self.phase = Phase::Killing {
                        until: now + KILL_CONFIRM,
                    };
                }
            }
            Phase::Killing { until } => {
                if !self.spared.any_left(reaped) {
                    self.phase = Phase::Done { complete: true };
                } else if now >= until {
                    self.phase = Phase::Done { complete: false };
                } else {
                    self.spared.signal_all(libc::SIGKILL);
                }
            }
        }
        match self.phase {
            Phase::Done { complete } => {
                self.spared.kill_unseen();
                Some(complete)
            }
            _ => None,
        }
    }

    /// Runs to the end, sleeping between checks.
    pub fn finish(mut self, reaped: &mut Reaped) -> bool {
        loop {
            if let Some(complete) = self.step(reaped) {
                return complete;
            }
            sys::sleep(POLL);
        }
    }
}
