//! `gatehouse clients …`: managing machine clients in the gateway's store. Run where `up` runs
//! (or with the deployed gateway's `--config`), they act on the same store, while it runs.

use std::path::PathBuf;

use anyhow::Context;
use gateway::auth::clients;
use gateway::config::Vars;
use gateway::store::Store;

/// Which store to act on: the one the given (or default) gateway configuration names.
pub struct StoreLocation {
    pub config: Option<PathBuf>,
    pub data_dir: PathBuf,
}

impl StoreLocation {
    pub async fn open(&self) -> anyhow::Result<Store> {
        let vars = Vars::new().set("GATEHOUSE_DATA_DIR", self.data_dir.display().to_string());
        let config = crate::load_config(self.config.as_deref(), &vars)?;
        Store::connect(&config.store)
            .await
            .context("opening the gateway's store")
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
