//! `gatehouse up`: the gateway and the services in one process, each listening on its own
//! port and calling the others over HTTP exactly as separate processes would.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use gateway::config::Vars;
use kit::observe::{AccessLog, Metrics};
use kit::shutdown::Shutdown;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// Where `up` listens and keeps its data; port 0 picks a free port.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub host: IpAddr,
    pub gateway_port: u16,
    pub users_port: u16,
    pub orders_port: u16,
    pub clock_port: u16,
    /// The gateway's admin listener (`/metrics`, the detailed `/readyz`): on `host`, this port;
    /// `None` uses the configuration's `admin_listen`.
    pub admin_port: Option<u16>,
    pub data_dir: PathBuf,
    /// A gateway configuration file; `None` uses ./config/gateway.yaml, else the embedded one.
    pub config: Option<PathBuf>,
}

/// A started system: its addresses, and the tasks serving them.
pub struct Running {
    pub gateway: SocketAddr,
    pub users: SocketAddr,
    pub orders: SocketAddr,
    pub clock: SocketAddr,
    pub admin: SocketAddr,
    /// True when the users database was created now and the demo accounts were seeded.
    pub seeded: bool,
    /// The registry every part records into.
    pub metrics: Metrics,
    tasks: JoinSet<std::io::Result<()>>,
}

impl Running {
    /// Waits until every part has stopped (after `shutdown` fires); the first failure wins.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        while let Some(result) = self.tasks.join_next().await {
            result
                .context("a part of the system panicked")?
                .context("a part of the system failed")?;
        }
        Ok(())
    }
}

pub async fn start(options: UpOptions, shutdown: Shutdown) -> anyhow::Result<Running> {
    let gateway_listener = bind(options.host, options.gateway_port, "gateway").await?;
    let users_listener = bind(options.host, options.users_port, "users").await?;
    let orders_listener = bind(options.host, options.orders_port, "orders").await?;
    let clock_listener = bind(options.host, options.clock_port, "clock").await?;
    let gateway_address = gateway_listener.local_addr()?;
    let users_address = users_listener.local_addr()?;
    let orders_address = orders_listener.local_addr()?;
    let clock_address = clock_listener.local_addr()?;
    let data_dir = options.data_dir.display().to_string();

    let vars = Vars::new()
        .set("GATEHOUSE_LISTEN", gateway_address.to_string())
        .set("GATEHOUSE_USERS_URL", format!("http://{users_address}"))
        .set("GATEHOUSE_ORDERS_URL", format!("http://{orders_address}"))
        .set("GATEHOUSE_CLOCK_URL", format!("http://{clock_address}"))
        .set("GATEHOUSE_DATA_DIR", data_dir.clone());
    // Every database of the folder at once, so a folder left by an older version is fixed
    // with one command rather than one failed start per file.
    kit::private_files::check_data_folder(&options.data_dir)?;
    let file = crate::config_file(options.config.as_deref());
    let config = crate::load_config(file.as_deref(), &vars)?;
    let issuer = config.tokens.issuer.clone();
    let admin_listener = match options.admin_port {
        Some(port) => bind(options.host, port, "gateway admin").await?,
        None => TcpListener::bind(config.admin_listen)
            .await
            .with_context(|| format!("gateway admin: cannot listen on {}", config.admin_listen))?,
    };
    let admin_address = admin_listener.local_addr()?;
    // One registry and one access log for every part, told apart by the `server` label, so one
    // scrape sees the whole process and no series is counted twice.
    let metrics = Metrics::new();
    let access_log =
        AccessLog::open(&config.access_log, &metrics).context("opening the access log")?;
    let mut gateway = gateway::Gateway::build_observed(config, metrics.clone(), access_log.clone())
        .await
        .context("starting the gateway")?;
    // The routes file is watched (and reread on SIGHUP) as in a deployed gateway.
    if let Some(file) = file {
        gateway = gateway.watch_file(file, vars);
    }
    // Every service verifies identity tokens with the keys the gateway publishes.
    let jwks = format!("http://{gateway_address}/.well-known/jwks.json");
    let verifier = |service: &str| {
        Arc::new(kit::IdentityVerifier::with_jwks(
            service,
            issuer.clone(),
            jwks.clone(),
        ))
    };

    let users_url = format!("sqlite://{data_dir}/users.db");
    let seeded = !kit::db::sqlite_file_exists(&users_url);
    let users_db = users::connect(&users_url)
        .await
        .context("opening the users database")?;
    if seeded {
        users::seed_demo_accounts(&users_db)
            .await
            .context("seeding the demo accounts")?;
    }
    let orders_db = orders::connect(&format!("sqlite://{data_dir}/orders.db"))
        .await
        .context("opening the orders database")?;

    let observed =
        |service: kit::service::Service| service.with_observe(metrics.clone(), access_log.clone());
    let mut tasks = JoinSet::new();
    tasks.spawn(gateway.serve_admin(admin_listener, shutdown.clone()));
    tasks.spawn(gateway.serve(gateway_listener, shutdown.clone()));
    tasks.spawn(
        observed(users::service(users_db, verifier(users::NAME)))
            .serve(users_listener, shutdown.clone()),
    );
    tasks.spawn(
        observed(orders::service(orders_db, verifier(orders::NAME)))
            .serve(orders_listener, shutdown.clone()),
    );
    tasks.spawn(
        observed(clock::service(verifier(clock::NAME))).serve(clock_listener, shutdown.clone()),
    );
    Ok(Running {
        gateway: gateway_address,
        users: users_address,
        orders: orders_address,
        clock: clock_address,
        admin: admin_address,
        seeded,
        metrics,
        tasks,
    })
}

async fn bind(host: IpAddr, port: u16, part: &str) -> anyhow::Result<TcpListener> {
    let address = SocketAddr::new(host, port);
    TcpListener::bind(address)
        .await
        .with_context(|| format!("{part}: cannot listen on {address}"))
}
