//! The cgroup counters of limits hit, read by a short script from inside a sandbox (a
//! container or a pod: the same files, v1 or v2).

use crate::backend::Counters;

/// The counters script prints a few short lines; more is not a cgroup file.
pub(crate) const MAX_COUNTERS_TEXT: usize = 4096;
/// Prints `FILE KEY VALUE` for each line of the cgroup files that count limits hit. The file
/// tells v1 from v2 (v2's `memory.events` has a `max` line too, meaning something else).
pub(crate) const COUNTERS_SCRIPT: &str = "cd /sys/fs/cgroup || exit 0
for f in memory/memory.oom_control pids/pids.events memory.events pids.events; do
  [ -r \"$f\" ] && while read -r k v; do echo \"$f $k $v\"; done < \"$f\"; done; exit 0";

/// Reads the counters script's `FILE KEY VALUE` lines.
pub(crate) fn parse_counters(text: &str) -> Option<Counters> {
    let mut counters = Counters::default();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(file), Some(key), Some(value)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let Ok(value) = value.parse::<u64>() else {
            continue;
        };
        // A counter said twice is not a cgroup file's: nothing of it is taken.
        let slot = match (file, key) {
            ("memory/memory.oom_control" | "memory.events", "oom_kill") => &mut counters.oom_kills,
            ("pids/pids.events" | "pids.events", "max") => &mut counters.pids_max,
            _ => continue,
        };
        if slot.replace(value).is_some() {
            return None;
        }
    }
    (counters != Counters::default()).then_some(counters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_from_cgroup_v1_and_v2() {
        let v1 = "memory/memory.oom_control oom_kill_disable 0\n\
                  memory/memory.oom_control under_oom 0\n\
                  memory/memory.oom_control oom_kill 2\n\
                  pids/pids.events max 17\n";
        assert_eq!(
            parse_counters(v1),
            Some(Counters {
                oom_kills: Some(2),
                pids_max: Some(17)
            })
        );
        // v2: memory.events' own `max` line is not the pids counter.
        let v2 = "memory.events max 9\nmemory.events oom_kill 1\npids.events max 0\n";
        assert_eq!(
            parse_counters(v2),
            Some(Counters {
                oom_kills: Some(1),
                pids_max: Some(0)
            })
        );
        assert_eq!(parse_counters(""), None);
        // The same counter twice (an extra line from somewhere): not a reading.
        assert_eq!(
            parse_counters("pids.events max 3\npids.events max 0\n"),
            None
        );
    }
}
