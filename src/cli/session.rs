//! `stockade session`: the warm sandboxes of this state directory.

use std::time::Duration;

use stockade::session::{self, PruneOptions, RM_LOCK_WAIT};

use super::{out, out_json, settings, GlobalArgs};

/// `--idle`'s default, as the flag reads (`stockade::session::DEFAULT_PRUNE_IDLE`).
const DEFAULT_IDLE_FLAG: &str = "30m";

#[derive(Debug, clap::Subcommand)]
pub enum SessionCmd {
    /// List sessions: profile, state, created, last used, busy
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Remove a session's sandbox (its /workspace goes with it)
    Rm { session: String },
    /// Remove sessions idle longer than --idle, and orphaned one-shot sandboxes
    Prune {
        /// A session is idle when no command used it for this long (e.g. 30m, 2h)
        #[arg(long, value_parser = super::parse_duration, default_value = DEFAULT_IDLE_FLAG)]
        idle: Duration,
        /// Only orphaned one-shot sandboxes; keep every session
        #[arg(long)]
        orphans_only: bool,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(global: &GlobalArgs, cmd: &SessionCmd) -> anyhow::Result<u8> {
    let settings = settings::settings(global)?;
    let state_dir = settings.state_dir.clone();
    let backend = settings::backend(global, &settings).await?;
    match cmd {
        SessionCmd::Ls { json } => {
            let sessions = session::list(&backend, &state_dir).await?;
            if *json {
                return out_json(&sessions).map(|()| 0);
            }
            let now = now_secs();
            out(format_args!(
                "{:<24} {:<12} {:<9} {:<10} {:<10} {:<5} SANDBOX",
                "SESSION", "PROFILE", "STATE", "CREATED", "LAST USED", "BUSY"
            ));
            for s in sessions {
                out(format_args!(
                    "{:<24} {:<12} {:<9} {:<10} {:<10} {:<5} {}",
                    s.session,
                    s.profile,
                    s.state,
                    ago(now, Some(s.created)),
                    ago(now, s.last_used),
                    if s.busy { "yes" } else { "no" },
                    s.sandbox
                ));
            }
        }
        SessionCmd::Rm { session } => {
            let removed = session::remove(&backend, &state_dir, session).await?;
            if removed.interrupted_running_command {
                out(format_args!(
                    "removed session {session}; a command still running in it after {}s was ended with it",
                    RM_LOCK_WAIT.as_secs()
                ));
            } else {
                out(format_args!("removed session {session}"));
            }
        }
        SessionCmd::Prune {
            idle,
            orphans_only,
            json,
        } => {
            let options = PruneOptions {
                sessions: !orphans_only,
                idle: *idle,
            };
            let report = session::prune(&backend, &state_dir, &options).await?;
            if *json {
                return out_json(&report).map(|()| 0);
            }
            out(format_args!(
                "removed {} session(s) idle for {} or more, {} orphaned one-shot sandbox(es); \
                 kept {} used more recently, {} busy",
                report.sessions.len(),
                humanize(*idle),
                report.orphans.len(),
                report.recent.len(),
                report.busy.len()
            ));
        }
    }
    Ok(0)
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `42s ago`, `5m ago`, `3h ago`, `2d ago`; `-` when unknown.
fn ago(now: i64, then: Option<i64>) -> String {
    match then {
        Some(t) => format!(
            "{} ago",
            humanize(Duration::from_secs(now.saturating_sub(t).max(0) as u64))
        ),
        None => "-".to_string(),
    }
}

fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_naturally() {
        assert_eq!(ago(1000, Some(958)), "42s ago");
        assert_eq!(ago(1000, None), "-");
        assert_eq!(humanize(Duration::from_secs(1800)), "30m");
        assert_eq!(humanize(Duration::from_secs(3 * 3600)), "3h");
        assert_eq!(humanize(Duration::from_secs(3 * 86_400)), "3d");
        assert_eq!(
            super::super::parse_duration(DEFAULT_IDLE_FLAG),
            Ok(stockade::session::DEFAULT_PRUNE_IDLE)
        );
    }
}
