//! The sandbox user and group, judged against the host: a uid or gid that owns a container
//! runtime's socket reaches it; a uid that is a host account shares that account's processes and
//! files wherever they meet (`/proc/<pid>/root`, signals).

use serde::Serialize;

use super::binds::Runtime;

/// A numeric user and group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
}

impl User {
    pub const ROOT: User = User { uid: 0, gid: 0 };

    pub fn is_root(self) -> bool {
        self.uid == 0
    }
}

impl std::fmt::Display for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.uid, self.gid)
    }
}

/// Parsed `UID[:GID]` (GID defaults to UID).
pub fn parse(user: &str) -> Result<(u32, u32), String> {
    let (uid, gid) = user.split_once(':').unwrap_or((user, ""));
    let numeric = |s: &str| !s.is_empty() && s.len() <= 10 && s.chars().all(|c| c.is_ascii_digit());
    if !numeric(uid) || !(gid.is_empty() || numeric(gid)) {
        return Err(format!(
            "{user:?} must be numeric UID or UID:GID (names depend on the image)"
        ));
    }
    let parse = |s: &str| {
        s.parse::<u32>()
            .map_err(|_| format!("{user:?}: {s} is not a uid/gid (0..=4294967295)"))
    };
    let uid = parse(uid)?;
    let gid = if gid.is_empty() { uid } else { parse(gid)? };
    Ok((uid, gid))
}

/// Checks the profile's user. `Ok((user, warnings))` when it may run.
pub fn check(user: &str, elevated: bool, runtime: &Runtime) -> Result<(User, Vec<String>), String> {
    let (uid, gid) = parse(user)?;
    if uid == 0 && !elevated {
        return Err("root (uid 0) is only allowed in a profile with `elevated = true`".to_string());
    }
    if gid == 0 && !elevated {
        return Err(
            "gid 0 is the root group, which owns files that give root; only an elevated profile may use it"
                .to_string(),
        );
    }
    for (socket, owner, group) in &runtime.socket_owners {
        if uid != 0 && uid == *owner {
            return Err(format!(
                "uid {uid} owns the container runtime's socket {}: a sandbox running as it is root on the host",
                socket.display()
            ));
        }
        if gid != 0 && gid == *group {
            return Err(format!(
                "gid {gid} is the group of the container runtime's socket {}: a sandbox in it is root on the host",
                socket.display()
            ));
        }
    }
    let mut warnings = Vec::new();
    if uid != 0 {
        if let Some(account) = host_account(uid) {
            warnings.push(format!(
                "uid {uid} is the host account {account:?}: that account can reach the sandbox's files through /proc/<pid>/root and signal its processes; use a uid no host account has, such as 65532"
            ));
        }
    }
    Ok((User { uid, gid }, warnings))
}

/// The name of the account with `uid` in the host's /etc/passwd. Read directly, not through
/// NSS: a lookup that misses the files would load and ask every other module (systemd,
/// LDAP) on every execution, for a warning.
fn host_account(uid: u32) -> Option<String> {
    const PASSWD: &str = "/etc/passwd";
    const MAX_PASSWD: u64 = 4 << 20;
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(PASSWD)
        .ok()?
        .take(MAX_PASSWD)
        .read_to_string(&mut text)
        .ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        (fields.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_parse_and_root_needs_elevation() {
        assert_eq!(parse("65532:65532"), Ok((65532, 65532)));
        assert_eq!(parse("700"), Ok((700, 700)));
        assert!(parse("sandbox").is_err());
        assert!(parse("1:x").is_err());
        assert!(parse("99999999999").is_err());
        let none = Runtime::default();
        assert!(check("0:0", false, &none).is_err());
        assert!(check("0:0", true, &none).is_ok());
        assert!(check("65532:0", false, &none)
            .unwrap_err()
            .contains("root group"));
    }

    #[test]
    fn the_runtime_sockets_owners_are_refused() {
        let mut runtime = Runtime::default();
        runtime
            .socket_owners
            .push(("/run/docker.sock".into(), 0, 998));
        runtime
            .socket_owners
            .push(("/run/user/1234/docker.sock".into(), 1234, 1234));
        let err = check("65532:998", false, &runtime).unwrap_err();
        assert!(err.contains("/run/docker.sock"), "{err}");
        let err = check("1234:5000", false, &runtime).unwrap_err();
        assert!(err.contains("owns"), "{err}");
        assert!(check("65532:65532", false, &runtime).is_ok());
    }

    #[test]
    fn a_host_account_is_warned_about() {
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
        let uid = passwd
            .lines()
            .filter_map(|l| l.split(':').nth(2)?.parse::<u32>().ok())
            .find(|&uid| uid != 0)
            .expect("a host account besides root in /etc/passwd");
        let (_, warnings) = check(&format!("{uid}:65532"), false, &Runtime::default()).unwrap();
        assert!(warnings[0].contains("host account"), "{warnings:?}");
    }
}
