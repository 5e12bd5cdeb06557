//! Prints an access token for the benchmarks' authenticated scenario.
//!
//! The gateway's login needs a users service, which the benchmark does not run: the point is
//! the gateway alone. So this opens the gateway's store (from the same configuration file the
//! gateway runs with), loads its signing keys, and issues the token with the gateway's own
//! `Tokens::issue`, exactly as a login would: same claims (`typ: at+jwt`, `kid`, iss, aud, sub,
//! kind, username, roles, scope, iat, nbf, exp, jti, iat_ms), same key, same code. Run it after
//! the gateway has started (the gateway creates its keys on first start).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use gateway::auth::keys::Keys;
use gateway::auth::tokens::{Subject, Tokens};
use gateway::config::{self, Vars};
use gateway::store::Store;
use kit::PrincipalKind;

#[derive(Parser)]
#[command(about = "Issue an access token from a gateway's store, for the benchmarks")]
struct Args {
    /// The gateway configuration file whose store and token settings to use.
    #[arg(long)]
    config: PathBuf,
    /// The caller's user id (`sub`); a fresh UUID v7 by default.
    #[arg(long)]
    subject: Option<String>,
    #[arg(long, default_value = "bench")]
    username: String,
    /// Comma-separated roles.
    #[arg(long, default_value = "user")]
    roles: String,
    /// Space-separated scopes.
    #[arg(long, default_value = "")]
    scope: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = config::load_file(&args.config, &Vars::new())?;
    let store = Store::connect(config.store.expose_secret())
        .await
        .context("opening the gateway's store")?;
    let keys = Keys::load(
        store,
        config.tokens.algorithm,
        gateway::auth::keys::KeyTiming::of(&config),
    )
    .await
    .context("loading the gateway's signing keys")?;
    let tokens = Tokens::new(Arc::new(keys), config.tokens.clone());
    let issued = tokens.issue(
        Subject {
            id: args
                .subject
                .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
            kind: PrincipalKind::User,
            username: Some(args.username),
            roles: split(&args.roles, ','),
            scopes: split(&args.scope, ' '),
        },
        None,
    )?;
    println!("{}", issued.token);
    Ok(())
}

fn split(list: &str, separator: char) -> Vec<String> {
    list.split(separator)
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}
