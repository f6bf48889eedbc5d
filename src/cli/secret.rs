//! `stockade secret`: secrets encrypted at rest (docs/secrets.md). A value is read from stdin,
//! never from the command line (argv is visible to every local user in /proc).

use std::io::Read;

use zeroize::Zeroizing;

use stockade::secrets::store::MAX_SECRET_BYTES;
use stockade::secrets::Secrets;

use super::{out, out_json, say, settings, GlobalArgs};

#[derive(Debug, clap::Subcommand)]
pub enum SecretCmd {
    /// Store secret NAME, its value read from stdin (one trailing newline dropped)
    Set {
        name: String,
        /// An API principal (a token's name) that may name it in a request; repeat for more.
        /// Without any, only the local CLI may use it (given again, replaces the list)
        #[arg(long, value_name = "PRINCIPAL")]
        allow: Vec<String>,
    },
    /// The secrets' names, when they were created and rotated (never their values)
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove secret NAME
    Rm { name: String },
    /// Replace secret NAME's value (read from stdin), or with --key re-encrypt every secret
    /// under a new key
    Rotate {
        /// The secret whose value to replace
        #[arg(required_unless_present = "key", conflicts_with = "key")]
        name: Option<String>,
        /// Replace the key instead: every secret is re-encrypted, the old key destroyed
        #[arg(long)]
        key: bool,
    },
}

fn store(global: &GlobalArgs) -> anyhow::Result<Secrets> {
    let settings = settings::settings(global)?;
    Ok(Secrets::new(&settings.state_dir, settings.secrets_key))
}

/// The value on stdin, capped; one trailing newline (as `echo` or a here-string adds) dropped.
fn value_from_stdin() -> anyhow::Result<Zeroizing<Vec<u8>>> {
    use std::io::IsTerminal as _;
    if std::io::stdin().is_terminal() {
        say("reading the value from stdin (end with Ctrl-D; it is not echoed back)");
    }
    let mut value = Zeroizing::new(Vec::new());
    std::io::stdin()
        .take(MAX_SECRET_BYTES as u64 + 2)
        .read_to_end(&mut value)?;
    if value.ends_with(b"\n") {
        value.pop();
        if value.ends_with(b"\r") {
            value.pop();
        }
    }
    Ok(value)
}

fn rfc3339(secs: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64);
    stockade::audit::format_rfc3339(at)
}

pub fn run(global: &GlobalArgs, cmd: &SecretCmd) -> anyhow::Result<u8> {
    let secrets = store(global)?;
    match cmd {
        SecretCmd::Set { name, allow } => {
            let value = value_from_stdin()?;
            let existed = secrets.set_allowing(name, &value, Some(allow))?;
            say(format_args!(
                "{} secret {name} ({} bytes, AES-256-GCM in {})",
                if existed { "replaced" } else { "stored" },
                value.len(),
                secrets.path().display()
            ));
        }
        SecretCmd::List { json } => {
            let list = secrets.list()?;
            if *json {
                out_json(&list)?;
            } else {
                out(format_args!(
                    "{:<32} {:<26} {:<26} {:<4} API PRINCIPALS",
                    "NAME", "CREATED", "ROTATED", "KEY"
                ));
                for s in list {
                    let allow = if s.allow.is_empty() {
                        "-".to_string()
                    } else {
                        s.allow.join(",")
                    };
                    out(format_args!(
                        "{:<32} {:<26} {:<26} v{:<3} {allow}",
                        s.name,
                        rfc3339(s.created),
                        s.rotated.map_or("-".to_string(), rfc3339),
                        s.key_version
                    ));
                }
            }
        }
        SecretCmd::Rm { name } => {
            secrets.remove(name)?;
            say(format_args!("removed secret {name}"));
        }
        SecretCmd::Rotate {
            name: Some(name), ..
        } => {
            secrets.get(name)?;
            let value = value_from_stdin()?;
            secrets.set(name, &value)?;
            say(format_args!("rotated secret {name}"));
        }
        SecretCmd::Rotate { name: None, .. } => {
            let version = secrets.rotate_key()?;
            say(format_args!(
                "every secret re-encrypted under key v{version} ({})",
                secrets.key_path().display()
            ));
        }
    }
    Ok(0)
}
