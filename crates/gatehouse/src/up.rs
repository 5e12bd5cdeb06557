//! `gatehouse up`: the gateway and the services in one process, each listening on its own
//! port and calling the others over HTTP exactly as separate processes would.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::Context;
use gateway::config::Vars;
use kit::config::{SecretUrl, ServiceConfig, ServiceDefaults};
use kit::observe::{AccessLog, Metrics};
use kit::service::Definition;
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
    /// The services' files (`users.yaml`, `orders.yaml`, `clock.yaml`, each optional) are read
    /// from the same folder.
    pub config: Option<PathBuf>,
    /// Where the gateway reads the time: the system's, or a test's manual clock.
    pub clock: gateway::clock::Clock,
    /// Serve the gateway over HTTPS with a certificate for localhost made in `data_dir/tls`
    /// (once; reused), signed by a CA of its own that clients are told to trust.
    pub tls: bool,
}

/// A started system: its addresses, and the tasks serving them.
pub struct Running {
    pub gateway: SocketAddr,
    /// With `tls`: the CA certificate file a client trusts to reach the gateway.
    pub trust: Option<PathBuf>,
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
    let services_folder = file.as_deref().and_then(Path::parent).map(Path::to_owned);
    let config = crate::load_config(file.as_deref(), &vars)?;
    let issuer = config.tokens.issuer.clone();
    let admin_listener = match options.admin_port {
        Some(port) => bind(options.host, port, "gateway admin").await?,
        None => TcpListener::bind(config.admin_listen)
            .await
            .with_context(|| format!("gateway admin: cannot listen on {}", config.admin_listen))?,
    };
    let admin_address = admin_listener.local_addr()?;
    // One registry and one access log for every part, so one scrape sees the whole process and
    // no series is counted twice.
    let metrics = Metrics::new();
    let access_log =
        AccessLog::open(&config.access_log, &metrics).context("opening the access log")?;
    // The gateway's `telemetry:` covers the whole system: each service exports under its name.
    let telemetry = config.telemetry.clone();
    let mut gateway = gateway::Gateway::build_observed(
        config,
        metrics.clone(),
        access_log.clone(),
        options.clock.clone(),
    )
    .await
    .context("starting the gateway")?;
    // The routes file is watched (and reread on SIGHUP) as in a deployed gateway.
    if let Some(file) = file {
        gateway = gateway.watch_file(file, vars);
    }
    let trust = if options.tls {
        let local = self_signed::localhost(&options.data_dir.join("tls"))?;
        gateway = gateway
            .with_tls(&local.settings())
            .context("serving the localhost certificate")?;
        Some(local.ca)
    } else {
        None
    };
    // Every service verifies identity tokens with the keys the gateway publishes, and keeps
    // its data in the data folder; the rest of its configuration is its own file's, if any.
    // Over TLS they read them from the admin listener (loopback, plain HTTP, the same keys):
    // their client speaks plain HTTP only, to the gateway and to each other.
    let jwks = match trust {
        None => format!("http://{gateway_address}/.well-known/jwks.json"),
        Some(_) => format!("http://{admin_address}/.well-known/jwks.json"),
    };
    let configure = |defaults: ServiceDefaults, listen: SocketAddr| {
        service_config(
            defaults,
            services_folder.as_deref(),
            listen,
            &data_dir,
            &jwks,
            &issuer,
        )
    };
    let users_config = configure(users::Users::DEFAULTS, users_address)?;
    let orders_config = configure(orders::Orders::DEFAULTS, orders_address)?;
    let clock_config = configure(clock::Clock::DEFAULTS, clock_address)?;

    // The demo accounts go into a new users database only, before the service answers anyone.
    let users_url = users_config
        .database_url
        .as_ref()
        .map(|url| url.expose_secret().to_owned())
        .unwrap_or_default();
    let seeded = !kit::db::sqlite_file_exists(&users_url);
    if seeded {
        let users_db = users_config
            .open_database(users::MIGRATIONS)
            .await
            .context("opening the users database")?;
        users::seed_demo_accounts(&users_db)
            .await
            .context("seeding the demo accounts")?;
    }

    // One registry and one access log for every part, told apart by the `server` label.
    let observed = |service: kit::service::Service, name: &'static str| {
        let tracer = match &telemetry {
            Some(telemetry) => {
                let telemetry = kit::trace::Telemetry {
                    service_name: name.to_owned(),
                    ..telemetry.clone()
                };
                kit::trace::Tracer::start(&telemetry, name, &metrics)?
            }
            None => kit::trace::Tracer::off(),
        };
        anyhow::Ok(
            service
                .with_observe(metrics.clone(), access_log.clone())
                .with_tracer(tracer),
        )
    };
    let users = users::Users::from_config(&users_config).await?;
    let users = observed(users, users::Users::DEFAULTS.name)?;
    let orders = orders::Orders::from_config(&orders_config).await?;
    let orders = observed(orders, orders::Orders::DEFAULTS.name)?;
    let clock = clock::Clock::from_config(&clock_config).await?;
    let clock = observed(clock, clock::Clock::DEFAULTS.name)?;
    let mut tasks = JoinSet::new();
    tasks.spawn(gateway.serve_admin(admin_listener, shutdown.clone()));
    tasks.spawn(gateway.serve(gateway_listener, shutdown.clone()));
    tasks.spawn(users.serve(users_listener, shutdown.clone()));
    tasks.spawn(orders.serve(orders_listener, shutdown.clone()));
    tasks.spawn(clock.serve(clock_listener, shutdown.clone()));
    Ok(Running {
        gateway: gateway_address,
        trust,
        users: users_address,
        orders: orders_address,
        clock: clock_address,
        admin: admin_address,
        seeded,
        metrics,
        tasks,
    })
}

/// A service's configuration under `up`: its file in `folder` (`<name>.yaml`) if there is one,
/// for its limits, drain timeout and database pool; `up` sets where it listens, its database in
/// the data folder, and the gateway whose tokens it verifies.
fn service_config(
    defaults: ServiceDefaults,
    folder: Option<&Path>,
    listen: SocketAddr,
    data_dir: &str,
    jwks_url: &str,
    issuer: &str,
) -> anyhow::Result<ServiceConfig> {
    let file = folder.map(|folder| folder.join(format!("{}.yaml", defaults.name)));
    let mut config = match file {
        Some(file) if file.exists() => defaults.load(&file, &Vars::new())?,
        _ => defaults.config(),
    };
    config.listen = listen;
    config.database_url = defaults
        .keeps_data
        .then(|| SecretUrl::new(format!("sqlite://{data_dir}/{}.db", defaults.name)));
    config.jwks_url = jwks_url.to_owned();
    config.issuer = issuer.to_owned();
    Ok(config)
}

/// The certificate `up --tls` serves: made once, kept in the data folder.
mod self_signed {
    use std::path::{Path, PathBuf};

    use anyhow::Context;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };

    /// The files of a localhost certificate and of the CA that signed it.
    pub struct Localhost {
        pub ca: PathBuf,
        pub cert: PathBuf,
        pub key: PathBuf,
    }

    impl Localhost {
        pub fn settings(&self) -> gateway::config::TlsSettings {
            gateway::config::TlsSettings {
                files: kit::tls::TlsFiles {
                    certificates: vec![kit::tls::CertificateFiles {
                        cert: self.cert.clone(),
                        key: self.key.clone(),
                    }],
                    client_ca: None,
                    min_version: kit::tls::MinVersion::Tls12,
                },
                names: NAMES.iter().map(|name| (*name).to_owned()).collect(),
                hsts: None,
                redirect_http: None,
            }
        }
    }

    const NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

    /// The certificate in `folder`, made now if it is not there. The CA's private key is never
    /// written: it signs this one certificate and is gone, so trusting the CA trusts nothing
    /// else. Delete the folder to make a new pair.
    pub fn localhost(folder: &Path) -> anyhow::Result<Localhost> {
        let files = Localhost {
            ca: folder.join("ca.pem"),
            cert: folder.join("localhost.pem"),
            key: folder.join("localhost.key"),
        };
        if files.ca.exists() && files.cert.exists() && files.key.exists() {
            return Ok(files);
        }
        let made = make().context("making a localhost certificate")?;
        // The key file is created 0600 (its folder 0700) before a byte is written to it.
        kit::private_files::prepare(&files.key, true)?;
        std::fs::write(&files.key, made.key)
            .with_context(|| format!("writing {}", files.key.display()))?;
        std::fs::write(&files.cert, made.cert)
            .with_context(|| format!("writing {}", files.cert.display()))?;
        std::fs::write(&files.ca, made.ca)
            .with_context(|| format!("writing {}", files.ca.display()))?;
        Ok(files)
    }

    struct Made {
        ca: String,
        cert: String,
        key: String,
    }

    fn make() -> Result<Made, rcgen::Error> {
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca.distinguished_name
            .push(DnType::CommonName, "gatehouse up local CA");
        let ca_key = KeyPair::generate()?;
        let ca = ca.self_signed(&ca_key)?;

        let names: Vec<String> = NAMES.iter().map(|name| (*name).to_owned()).collect();
        let mut leaf = CertificateParams::new(names)?;
        leaf.distinguished_name
            .push(DnType::CommonName, "localhost");
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate()?;
        let cert = leaf.signed_by(&key, &ca, &ca_key)?;
        Ok(Made {
            ca: ca.pem(),
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }
}

async fn bind(host: IpAddr, port: u16, part: &str) -> anyhow::Result<TcpListener> {
    let address = SocketAddr::new(host, port);
    TcpListener::bind(address)
        .await
        .with_context(|| format!("{part}: cannot listen on {address}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `defaults` under `up` on `listen`, with the files in `folder`, data in /srv/data, and
    /// the issuer `up-issuer`.
    fn under_up(
        defaults: ServiceDefaults,
        folder: &Path,
        listen: &str,
    ) -> anyhow::Result<ServiceConfig> {
        service_config(
            defaults,
            Some(folder),
            listen.parse().unwrap(),
            "/srv/data",
            "http://127.0.0.1:7001/.well-known/jwks.json",
            "up-issuer",
        )
    }

    #[test]
    fn a_services_file_beside_the_gateways_sets_its_limits_while_up_keeps_its_place_and_data() {
        let folder = tempfile::tempdir().unwrap();
        std::fs::write(
            folder.path().join("users.yaml"),
            "listen: 127.0.0.1:9101\ndrain_timeout: 3s\nlimits: { max_connections_per_ip: 3 }\n",
        )
        .unwrap();

        let config = under_up(users::Users::DEFAULTS, folder.path(), "127.0.0.1:7101").unwrap();

        assert_eq!(config.limits.max_connections_per_ip, 3, "the file's");
        assert_eq!(config.drain_timeout, std::time::Duration::from_secs(3));
        assert_eq!(
            config.listen.to_string(),
            "127.0.0.1:7101",
            "up's listener, over the file's"
        );
        assert_eq!(
            config.database_url,
            Some(SecretUrl::new("sqlite:///srv/data/users.db"))
        );
        assert_eq!(config.issuer, "up-issuer");
    }

    #[test]
    fn a_service_without_a_file_runs_on_its_defaults() {
        let folder = tempfile::tempdir().unwrap();

        let config = under_up(clock::Clock::DEFAULTS, folder.path(), "127.0.0.1:7103").unwrap();

        assert_eq!(
            config.limits,
            clock::Clock::DEFAULTS.config().limits,
            "the defaults"
        );
        assert_eq!(config.database_url, None, "clock keeps no data");
    }

    #[test]
    fn a_bad_services_file_stops_up_with_its_mistake() {
        let folder = tempfile::tempdir().unwrap();
        std::fs::write(folder.path().join("orders.yaml"), "drain_timeout: soon\n").unwrap();

        let error = under_up(orders::Orders::DEFAULTS, folder.path(), "127.0.0.1:7102")
            .unwrap_err()
            .to_string();

        assert!(error.contains("orders.yaml:1:16: drain_timeout"), "{error}");
    }
}
