//! `gatehouse clients …` and `gatehouse keys …`: managing machine clients and signing keys in
//! the gateway's store. Run where `up` runs (or with the deployed gateway's `--config`), they
//! act on the same store, while it runs; running gateways pick changes up by themselves.

use std::path::PathBuf;

use anyhow::Context;
use gateway::auth::keys::{self, KeyStatus};
use gateway::config::{GatewayConfig, Vars};
use gateway::issuer::clients;
use gateway::store::Store;

/// Which store to act on: the one the given (or default) gateway configuration names.
pub struct StoreLocation {
    pub config: Option<PathBuf>,
    pub data_dir: PathBuf,
}

impl StoreLocation {
    pub async fn open(&self) -> anyhow::Result<Store> {
        Ok(self.open_with_config().await?.1)
    }

    async fn open_with_config(&self) -> anyhow::Result<(GatewayConfig, Store)> {
        let vars = Vars::new().set("GATEHOUSE_DATA_DIR", self.data_dir.display().to_string());
        let config = crate::load_config(self.config.as_deref(), &vars)?;
        let store = Store::connect(config.store.expose_secret())
            .await
            .context("opening the gateway's store")?;
        Ok((config, store))
    }
}

pub async fn add_client(
    location: &StoreLocation,
    id: &str,
    scopes: &str,
) -> anyhow::Result<String> {
    let store = location.open().await?;
    let new = clients::add(&store, id, scopes).await?;
    Ok(format!(
        "client_id:     {}\nclient_secret: {}\nscopes:        {}\nThe secret is shown this once; store it now.",
        new.client.id,
        new.secret,
        new.client.scopes.join(" ")
    ))
}

pub async fn list_clients(location: &StoreLocation) -> anyhow::Result<String> {
    let store = location.open().await?;
    let clients = clients::list(&store).await?;
    if clients.is_empty() {
        return Ok("no clients".to_owned());
    }
    let width = clients.iter().map(|c| c.id.len()).max().unwrap_or(0).max(9);
    let mut out = format!("{:width$}  {:27}  scopes\n", "client_id", "created_at");
    for client in clients {
        out.push_str(&format!(
            "{:width$}  {:27}  {}\n",
            client.id,
            client.created_at,
            client.scopes.join(" ")
        ));
    }
    Ok(out.trim_end().to_owned())
}

pub async fn remove_client(location: &StoreLocation, id: &str) -> anyhow::Result<String> {
    let store = location.open().await?;
    if clients::remove(&store, id).await? {
        Ok(format!(
            "removed client {id}; tokens it already holds expire on their own"
        ))
    } else {
        anyhow::bail!("no client named {id:?}")
    }
}

pub async fn rotate_keys(location: &StoreLocation) -> anyhow::Result<String> {
    let (config, store) = location.open_with_config().await?;
    let added = keys::rotate(
        &store,
        config.tokens.algorithm,
        keys::KeyTiming::of(&config),
    )
    .await?;
    let mut out = String::new();
    for key in added {
        out.push_str(&format!("new {} key {}\n", key.algorithm, key.kid));
    }
    out.push_str(&format!(
        "It is published at once and signs after {}s (and each running gateway's next key reload, within {}s);\ntokens signed by the previous key keep verifying until they expire.",
        config.tokens.key_activation.as_secs(),
        gateway::auth::keys::KEY_RELOAD_INTERVAL.as_secs()
    ));
    Ok(out)
}

pub async fn list_keys(location: &StoreLocation) -> anyhow::Result<String> {
    let (config, store) = location.open_with_config().await?;
    let stored = store.signing_keys().await?;
    let keys = keys::describe(&stored, keys::KeyTiming::of(&config));
    let width = keys.iter().map(|k| k.kid.len()).max().unwrap_or(0).max(3);
    let mut out = format!(
        "{:width$}  {:9}  {:27}  status\n",
        "kid", "algorithm", "created_at"
    );
    for key in keys {
        let status = match key.status {
            // As the `created_at` column beside it: the one format timestamps are written in.
            KeyStatus::Pending { from } => {
                format!("published, signs from {}", kit::time::format(&from))
            }
            KeyStatus::Signing => "signing".to_owned(),
            KeyStatus::Verifying { until } => {
                format!("verifying until {}", kit::time::format(&until))
            }
            KeyStatus::Retired => "retired".to_owned(),
        };
        out.push_str(&format!(
            "{:width$}  {:9}  {:27}  {status}\n",
            key.kid, key.algorithm, key.created_at
        ));
    }
    Ok(out.trim_end().to_owned())
}
