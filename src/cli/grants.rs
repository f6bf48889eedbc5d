//! `stockade grants`: what each principal holds (its token's scope and state, its sandboxes),
//! and revoking all of it.

use stockade::audit::AuthKind;
use stockade::server::auth::record_cli_event;
use stockade::server::sandboxes::Registry;
use stockade::server::tokens::{self, TokenError, Tokens};

use super::{out, out_json, say, settings, GlobalArgs};

#[derive(Debug, clap::Subcommand)]
pub enum GrantsCmd {
    /// Principals: scope, state, sandboxes
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a principal's grant: its token stops working and its sandboxes are removed
    /// (a running server also ends their running commands: prefer DELETE /v1/grants/P there)
    Revoke { principal: String },
}

pub async fn run(global: &GlobalArgs, cmd: &GrantsCmd) -> anyhow::Result<u8> {
    let state_dir = settings::state_dir(global)?;
    match cmd {
        GrantsCmd::Ls { json } => {
            let grants = stockade::server::grants(&state_dir)?;
            if *json {
                out_json(&grants)?;
                return Ok(0);
            }
            out(format_args!(
                "{:<24} {:<6} {:<7} SANDBOXES",
                "PRINCIPAL", "SCOPE", "ACTIVE"
            ));
            for g in &grants {
                let sandboxes: Vec<&str> = g["sandboxes"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|s| s.as_str()).collect())
                    .unwrap_or_default();
                out(format_args!(
                    "{:<24} {:<6} {:<7} {}",
                    g["principal"].as_str().unwrap_or_default(),
                    g["scope"].as_str().unwrap_or_default(),
                    if g["active"] == true { "yes" } else { "no" },
                    sandboxes.join(",")
                ));
            }
            Ok(0)
        }
        GrantsCmd::Revoke { principal } => {
            let now = tokens::now_secs();
            Tokens::new(&state_dir).update(|f| {
                let mut found = false;
                for t in f.tokens.iter_mut().filter(|t| t.name == *principal) {
                    found = true;
                    t.revoked.get_or_insert(now);
                }
                if found {
                    Ok(())
                } else {
                    Err(TokenError::NotFound {
                        name: principal.clone(),
                    })
                }
            })?;
            let registry = Registry::new(&state_dir);
            let backend = settings::backend(global, &settings::settings(global)?).await?;
            let mut removed = 0;
            for record in registry
                .list()
                .into_iter()
                .filter(|r| r.owner == *principal)
            {
                let _ = stockade::session::remove(&backend, &state_dir, &record.id).await;
                registry.remove(&record.id);
                removed += 1;
            }
            record_cli_event(&state_dir, AuthKind::GrantRevoked, principal)?;
            say(format_args!(
                "revoked {principal}: its token no longer works; {removed} sandbox(es) removed"
            ));
            Ok(0)
        }
    }
}
