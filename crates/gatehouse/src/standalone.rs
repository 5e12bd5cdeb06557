//! One part per process, as deployed: `gatehouse gateway`, `gatehouse users`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use gateway::config::{self, Vars};
use kit::shutdown::Shutdown;
use tokio::net::TcpListener;

pub async fn gateway(config_path: &Path, shutdown: Shutdown) -> anyhow::Result<()> {
    let config = config::load_file(config_path, &Vars::new())?;
    let listen = config.listen;
    let gateway = gateway::Gateway::build(config).await?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    gateway.serve(listener, shutdown).await?;
    Ok(())
}

/// Settings of a service run on its own.
pub struct ServiceOptions {
    pub listen: SocketAddr,
    pub database_url: String,
    pub jwks_url: String,
    pub issuer: String,
}

pub async fn users(options: ServiceOptions, shutdown: Shutdown) -> anyhow::Result<()> {
    let db = users::connect(&options.database_url).await?;
    let verifier = Arc::new(kit::IdentityVerifier::with_jwks(
        users::NAME,
        options.issuer,
        options.jwks_url,
    ));
    let listener = TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("cannot listen on {}", options.listen))?;
    users::service(db, verifier)
        .serve(listener, shutdown)
        .await?;
    Ok(())
}
