//! The kill rule in the Docker backend, from outside the process that ran the command: a fresh
//! exec as the sandbox user that ends every process of that user but the init and the keeper
//! (`stockade-agent kill` where the agent is mounted, else the fork-free bash script below),
//! and the reset when even that cannot confirm it.

use std::time::{Duration, Instant};

use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::query_parameters::{InspectContainerOptions, KillContainerOptions};
use futures_util::StreamExt;

use super::engine::status_of;
use super::DockerBackend;
use crate::backend::{BackendError, ProcessSpec, Sandbox};

/// How long the kill script keeps sending KILL and checking that everything is gone, after the
/// grace period: KILL is delivered when a process is next scheduled, which under CPU pressure
/// (a fork bomb on one CPU) takes a moment.
pub const KILL_CONFIRM: Duration = Duration::from_secs(2);
/// Exit status of the kill script (and of `stockade-agent kill`) when processes survived KILL
/// (stuck in the kernel, or a fork race it lost): the caller must fall back to resetting the
/// container.
pub const KILL_INCOMPLETE: i64 = stockade_proto::KILL_INCOMPLETE as i64;

/// The script that ends a command's processes inside the container: TERM to every process
/// except PID 1 (docker-init), the keeper and itself, wait up to the grace period for them to
/// go, then KILL what is left until nothing is, and exit 0; or [`KILL_INCOMPLETE`] if something
/// survived [`KILL_CONFIRM`]. It runs as the command's user, so it reaches exactly the processes
/// that user could start, including ones that detached or called setsid.
///
/// The keeper is the oldest child of PID 1: exec'd commands have parent 0 (they enter the
/// container from outside), and orphans re-parented to PID 1 are all younger than the keeper.
///
/// It never forks: under a fork bomb the pids limit is exhausted, and bash retries a failed
/// fork with a backoff of seconds, so a script that needed a subshell or `sleep` would stall.
/// It waits with `read -t` on its standard input, which the caller keeps open and silent
/// (`sleep` only if that input is closed). For a non-root user `kill -1` signals all of that
/// user's processes in one system call, which the kernel performs under the task list lock, so
/// a fork bomb cannot slip a new child past it (kill(2), kernel/signal.c
/// `kill_something_info`); the keeper runs as root and is not hit.
pub fn kill_script(grace: Duration) -> Vec<String> {
    const POLL_MS: u128 = 50;
    let grace_us = grace.as_micros();
    let confirm_us = KILL_CONFIRM.as_micros();
    let polls = (grace.as_millis() / POLL_MS).max(1);
    let confirm_polls = (KILL_CONFIRM.as_millis() / POLL_MS).max(1);
    // Loops are bounded by time (bash 5's EPOCHREALTIME) and by a count of polls, since under
    // CPU pressure one pass over /proc can take longer than a poll.
    let script = format!(
        r#"nap() {{ read -r -t 0.05 _; [ $? -gt 128 ] || sleep 0.05; }}
now() {{ t=${{EPOCHREALTIME/./}}; t=${{t:-0}}; }}
field() {{ v=; while read -r k x _; do [ "$k" = "$1" ] && {{ v=$x; return; }}; done < "$2"; }}
field Uid: /proc/self/status; uid=$v
keeper=; [ "$uid" = 0 ] && for d in /proc/[0-9]*; do p=${{d#/proc/}}; v=; field PPid: "$d/status" 2>/dev/null
  [ "$v" = 1 ] && {{ [ -z "$keeper" ] || [ "$p" -lt "$keeper" ]; }} && keeper=$p; done
sweep() {{ n=0; for d in /proc/[0-9]*; do p=${{d#/proc/}}; case $p in 1|$$|$keeper) continue;; esac
  [ -O "$d" ] || continue; v=; field State: "$d/status" 2>/dev/null; case $v in ''|Z|X) continue;; esac
  kill -$1 "$p" 2>/dev/null && n=$((n+1)); done; }}
all() {{ if [ "$uid" = 0 ]; then sweep $1; else kill -$1 -1 2>/dev/null; fi; }}
all TERM
now; end=$((t+{grace_us})); i=0
while [ $i -lt {polls} ] && [ $t -le $end ]; do sweep 0; [ $n = 0 ] && exit 0; nap; now; i=$((i+1)); done
now; end=$((t+{confirm_us})); i=0
while [ $i -lt {confirm_polls} ] && [ $t -le $end ]; do all KILL; nap; sweep 0; [ $n = 0 ] && exit 0; now; i=$((i+1)); done
exit {KILL_INCOMPLETE}"#
    );
    vec!["bash".into(), "-c".into(), script]
}

/// Beyond the kill's own bound (grace + confirm), time for the exec to start and end.
const KILL_MARGIN: Duration = Duration::from_secs(1);
/// Attempts at starting the kill before giving up on it (and resetting the container).
const KILL_ATTEMPTS: u32 = 3;
/// Polling for an exec's or a container's end.
pub(super) const POLL: Duration = Duration::from_millis(20);
const STOP_POLLS: u32 = 50;

enum KillResult {
    Ended,
    Incomplete,
    NotStarted,
}

impl DockerBackend {
    /// The kill rule from a fresh exec as `process.user`. `Ok(true)` when every process was
    /// seen gone; `Ok(false)` when that could not be confirmed in time (reset the container).
    pub(super) async fn kill_tree(
        &self,
        sandbox: &Sandbox,
        process: &ProcessSpec,
    ) -> Result<bool, BackendError> {
        let deadline = Instant::now() + process.kill_grace + KILL_CONFIRM + KILL_MARGIN;
        for _ in 0..KILL_ATTEMPTS {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.kill_once(sandbox, process, left).await? {
                KillResult::Ended => return Ok(true),
                KillResult::Incomplete => return Ok(false),
                // With every pid taken, the runtime itself may fail to start the exec.
                KillResult::NotStarted => tokio::time::sleep(POLL).await,
            }
        }
        Ok(false)
    }

    async fn kill_once(
        &self,
        sandbox: &Sandbox,
        process: &ProcessSpec,
        bound: Duration,
    ) -> Result<KillResult, BackendError> {
        let engine = self.engine().await?;
        let docker = &engine.docker;
        let agent = sandbox.channel.is_some();
        let exec = engine
            .call(
                "create exec (kill)",
                docker.create_exec(
                    &sandbox.id,
                    CreateExecOptions::<String> {
                        attach_stdout: Some(true),
                        attach_stderr: Some(true),
                        // The script waits by reading this silent input (it must not fork).
                        attach_stdin: Some(!agent),
                        cmd: Some(if agent {
                            vec![
                                crate::agent::AGENT_IN_CONTAINER.to_string(),
                                "kill".to_string(),
                                "--grace-ms".to_string(),
                                process.kill_grace.as_millis().to_string(),
                            ]
                        } else {
                            kill_script(process.kill_grace)
                        }),
                        user: Some(process.user.to_string()),
                        ..Default::default()
                    },
                ),
            )
            .await?;
        let start = engine
            .call("start exec (kill)", docker.start_exec(&exec.id, None))
            .await?;
        let StartExecResults::Attached { mut output, input } = start else {
            return Ok(KillResult::Incomplete);
        };
        // The engine may keep an exec's stream open while its input is, so the end of the
        // script is seen by polling the exec, not by the stream closing.
        let drain = async {
            while output.next().await.is_some() {}
            std::future::pending::<()>().await
        };
        let ended = async {
            loop {
                tokio::time::sleep(POLL).await;
                let info = engine
                    .call("inspect exec (kill)", docker.inspect_exec(&exec.id))
                    .await?;
                if info.running != Some(true) {
                    return Ok::<_, BackendError>(info.exit_code);
                }
            }
        };
        let code = tokio::time::timeout(bound, async {
            tokio::select! {
                code = ended => code,
                _ = drain => Ok(None),
            }
        })
        .await;
        drop(input);
        let Ok(code) = code else {
            tracing::debug!(container = %sandbox.name, "kill did not finish in time");
            return Ok(KillResult::Incomplete);
        };
        let code = code?;
        tracing::debug!(container = %sandbox.name, ?code, "kill ended");
        Ok(match code {
            Some(0) => KillResult::Ended,
            Some(KILL_INCOMPLETE) => KillResult::Incomplete,
            _ => KillResult::NotStarted,
        })
    }

    /// Ends everything in a container when the kill inside it could not: a one-shot container
    /// is removed; a session container is killed (the engine ends its whole PID namespace) and
    /// started again, so the session stays usable, with fresh tmpfs mounts.
    pub(super) async fn reset_container(&self, sandbox: &Sandbox) -> Result<(), BackendError> {
        let engine = self.engine().await?;
        tracing::warn!(container = %sandbox.name, "resetting the container: the kill inside it did not finish");
        if !sandbox.is_session() {
            return self.remove_container(&sandbox.id).await;
        }
        let docker = &engine.docker;
        let killed = engine
            .call(
                "kill container",
                docker.kill_container(&sandbox.id, None::<KillContainerOptions>),
            )
            .await;
        // 409: it already stopped.
        match killed {
            Err(e) if status_of(&e) != Some(409) => return Err(e.into()),
            _ => {}
        }
        self.wait_stopped(sandbox).await?;
        engine
            .call("start container", docker.start_container(&sandbox.id, None))
            .await?;
        Ok(())
    }

    async fn wait_stopped(&self, sandbox: &Sandbox) -> Result<(), BackendError> {
        let engine = self.engine().await?;
        for _ in 0..STOP_POLLS {
            let info = engine
                .call(
                    "inspect container",
                    engine
                        .docker
                        .inspect_container(&sandbox.id, None::<InspectContainerOptions>),
                )
                .await?;
            if info.state.and_then(|s| s.running) != Some(true) {
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        }
        Err(BackendError::Protocol {
            what: format!("container {} did not stop after SIGKILL", sandbox.name),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_script_spares_init_keeper_and_itself() {
        let script = kill_script(Duration::from_secs(2)).join(" ");
        assert!(script.contains("1|$$|$keeper) continue"));
        assert!(script.contains("all TERM"));
        assert!(script.contains("all KILL"));
        assert!(script.contains("-lt 40"), "2 s of 50 ms polls: {script}");
        assert!(script.ends_with("exit 3"), "{script}");
        // Fork-free apart from `sleep`: no command substitution, no pipeline.
        assert!(!script.replace("$((", "").contains("$("), "{script}");
        assert!(!script.contains(" | "), "{script}");
    }
}
