//! `stockade token`: the API's tokens (printed once, stored as digests).

use std::io::Read;
use std::time::Duration;

use stockade::audit::AuthKind;
use stockade::server::auth::record_cli_event;
use stockade::server::tokens::{self, Scope, TokenError, TokenRecord, Tokens};

use super::{out, out_json, settings, GlobalArgs};

#[derive(Debug, clap::Subcommand)]
pub enum TokenCmd {
    /// Create a token for principal NAME and print it, once, alone on stdout
    Create {
        #[arg(long)]
        name: String,
        /// It stops working after this long (e.g. 30d, 12h) [default: never]
        #[arg(long, value_parser = super::parse_duration)]
        ttl: Option<Duration>,
        /// exec: its own sandboxes and executions; admin: everything
        #[arg(long, default_value = "exec")]
        scope: Scope,
        /// Use the token read from stdin instead of a generated one (32+ characters, enough
        /// entropy; refused with the reason otherwise)
        #[arg(long)]
        from_stdin: bool,
    },
    /// List tokens (never their values)
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token: refused from the next request on, no restart needed
    Revoke { name: String },
    /// Replace a token's value (the old one stops working at once) and print the new one
    Rotate { name: String },
}

pub fn run(global: &GlobalArgs, cmd: &TokenCmd) -> anyhow::Result<u8> {
    let state_dir = settings::state_dir(global)?;
    let store = Tokens::new(&state_dir);
    let now = tokens::now_secs();
    match cmd {
        TokenCmd::Create {
            name,
            ttl,
            scope,
            from_stdin,
        } => {
            if !tokens::valid_name(name) {
                return Err(TokenError::BadName { name: name.clone() }.into());
            }
            let token = if *from_stdin {
                let mut text = String::new();
                std::io::stdin()
                    .take(tokens::MAX_TOKEN_BYTES as u64 + 2)
                    .read_to_string(&mut text)?;
                let token = text.trim_end_matches(['\n', '\r']).to_string();
                tokens::check_strength(&token)?;
                token
            } else {
                tokens::generate()
            };
            let digest = tokens::digest(&token);
            store.update(|f| {
                if f.tokens.iter().any(|t| t.name == *name) {
                    return Err(TokenError::Exists { name: name.clone() });
                }
                if f.tokens.iter().any(|t| t.sha256 == digest) {
                    return Err(TokenError::Weak {
                        why: "another token has this value".to_string(),
                    });
                }
                f.tokens.push(TokenRecord {
                    name: name.clone(),
                    scope: *scope,
                    sha256: digest.clone(),
                    created: now,
                    expires: ttl.map(|t| now.saturating_add(t.as_secs() as i64)),
                    revoked: None,
                    rotated: None,
                    bits: Some(if *from_stdin {
                        tokens::strength_bits(&token)
                    } else {
                        tokens::GENERATED_BITS
                    }),
                });
                Ok(())
            })?;
            record_cli_event(&state_dir, AuthKind::TokenCreated, name)?;
            if !*from_stdin {
                out(token);
            }
            Ok(0)
        }
        TokenCmd::List { json } => {
            let file = store.load()?;
            if *json {
                let rows: Vec<serde_json::Value> = file
                    .tokens
                    .iter()
                    .map(|t| {
                        serde_json::json!({
                            "name": t.name,
                            "scope": t.scope,
                            "created": t.created,
                            "expires": t.expires,
                            "revoked": t.revoked,
                            "rotated": t.rotated,
                            "bits": t.bits,
                            "active": t.active(now),
                        })
                    })
                    .collect();
                out_json(&rows)?;
                return Ok(0);
            }
            out(format_args!(
                "{:<24} {:<6} {:<8} EXPIRES",
                "NAME", "SCOPE", "STATE"
            ));
            for t in &file.tokens {
                let state = if t.revoked.is_some() {
                    "revoked"
                } else if t.expired(now) {
                    "expired"
                } else {
                    "active"
                };
                let expires = t
                    .expires
                    .map_or("never".to_string(), |e| format!("in {}s", e - now));
                out(format_args!(
                    "{:<24} {:<6} {:<8} {expires}",
                    t.name,
                    t.scope.to_string(),
                    state
                ));
            }
            Ok(0)
        }
        TokenCmd::Revoke { name } => {
            store.update(|f| {
                let t = f
                    .tokens
                    .iter_mut()
                    .find(|t| t.name == *name)
                    .ok_or_else(|| TokenError::NotFound { name: name.clone() })?;
                t.revoked.get_or_insert(now);
                Ok(())
            })?;
            record_cli_event(&state_dir, AuthKind::TokenRevoked, name)?;
            super::say(format_args!("revoked token {name}"));
            Ok(0)
        }
        TokenCmd::Rotate { name } => {
            let token = store.rotate(name, now)?;
            record_cli_event(&state_dir, AuthKind::TokenRotated, name)?;
            out(token);
            Ok(0)
        }
    }
}
