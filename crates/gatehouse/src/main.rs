//! The `gatehouse` command: parses the command line and hands over to the library.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gatehouse::admin::{self, StoreLocation};
use gatehouse::standalone::{self, Part, ServiceOptions};
use gatehouse::up::{self, UpOptions};
use kit::shutdown::Shutdown;
use kit::telemetry::{self, LogFormat};

// A proxy allocates and frees small objects for every request (header maps, bodies' boxes, the
// pool's and the runtime's bookkeeping), from both runtime threads; mimalloc's thread-local
// free lists make that cheaper than glibc's malloc (docs/BENCHMARKS.md, "Third round").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "gatehouse",
    version,
    about = "API gateway with centralized authentication, and the services behind it"
)]
struct Cli {
    /// Log lines as `human` text or `json`.
    #[arg(
        long,
        global = true,
        env = "GATEHOUSE_LOG_FORMAT",
        default_value = "human"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway and every service in one process, on embedded defaults.
    Up {
        /// Address every part listens on; loopback unless you mean otherwise.
        #[arg(long, env = "GATEHOUSE_HOST", default_value = "127.0.0.1")]
        host: IpAddr,
        #[arg(long, env = "GATEHOUSE_GATEWAY_PORT", default_value_t = 8001)]
        gateway_port: u16,
        #[arg(long, env = "GATEHOUSE_USERS_PORT", default_value_t = 8101)]
        users_port: u16,
        #[arg(long, env = "GATEHOUSE_ORDERS_PORT", default_value_t = 8102)]
        orders_port: u16,
        #[arg(long, env = "GATEHOUSE_CLOCK_PORT", default_value_t = 8103)]
        clock_port: u16,
        /// The gateway's admin listener (/metrics, detailed /readyz) on `host`; default: the
        /// configuration's `admin_listen` (127.0.0.1:8002).
        #[arg(long, env = "GATEHOUSE_ADMIN_PORT")]
        admin_port: Option<u16>,
        /// Where the SQLite files live.
        #[arg(long, env = "GATEHOUSE_DATA_DIR", default_value = "data")]
        data_dir: PathBuf,
        /// Gateway configuration (default: ./config/gateway.yaml, else the built-in one).
        #[arg(long, env = "GATEHOUSE_CONFIG")]
        config: Option<PathBuf>,
        /// Serve the gateway over HTTPS with a localhost certificate made once in
        /// `<data-dir>/tls` (signed by a local CA whose file is printed, for curl --cacert).
        #[arg(long, env = "GATEHOUSE_TLS")]
        tls: bool,
    },
    /// Run the gateway alone.
    Gateway {
        #[arg(long, env = "GATEHOUSE_CONFIG", default_value = "config/gateway.yaml")]
        config: PathBuf,
    },
    #[command(flatten)]
    Service(ServiceCommand),
    /// Manage machine-to-machine clients in the gateway's store (works while it runs).
    Clients {
        #[command(subcommand)]
        action: ClientsAction,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Manage the gateway's signing keys (works while it runs).
    Keys {
        #[command(subcommand)]
        action: KeysAction,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Manage accounts in the users database directly (a deployment's first admin).
    Accounts {
        #[command(subcommand)]
        action: AccountsAction,
    },
    /// GET a URL and exit 0 on a 2xx answer: the container image's health check (it has no
    /// shell and no curl), e.g. `gatehouse probe http://127.0.0.1:8001/healthz`.
    Probe {
        url: String,
        /// How long to wait for the answer.
        #[arg(long, default_value = "3s", value_parser = kit::config::values::parse_any_duration)]
        timeout: std::time::Duration,
    },
    /// Validate a gateway configuration file exactly as the gateway would, without starting.
    CheckConfig {
        #[arg(default_value = "config/gateway.yaml")]
        file: PathBuf,
    },
}

/// Which gateway store an admin command acts on: the one `up` uses, or a deployed gateway's.
#[derive(clap::Args)]
struct StoreArgs {
    /// The gateway configuration whose store to use (default as for `up`).
    #[arg(long, global = true, env = "GATEHOUSE_CONFIG")]
    config: Option<PathBuf>,
    /// The data folder, as for `up`.
    #[arg(
        long,
        global = true,
        env = "GATEHOUSE_DATA_DIR",
        default_value = "data"
    )]
    data_dir: PathBuf,
}

impl StoreArgs {
    fn location(self) -> StoreLocation {
        StoreLocation {
            config: self.config,
            data_dir: self.data_dir,
        }
    }
}

/// A service run on its own, one per process as deployed.
#[derive(Subcommand)]
enum ServiceCommand {
    /// Run the users service alone.
    Users(ServiceOptions),
    /// Run the orders service alone.
    Orders(ServiceOptions),
    /// Run the clock service alone.
    Clock(ServiceOptions),
}

impl ServiceCommand {
    fn part(self) -> (Part, ServiceOptions) {
        match self {
            Self::Users(args) => (Part::Users, args),
            Self::Orders(args) => (Part::Orders, args),
            Self::Clock(args) => (Part::Clock, args),
        }
    }
}

#[derive(Subcommand)]
enum ClientsAction {
    /// Register a client; prints its secret once.
    Add {
        /// The client id, e.g. `reporting-job`.
        name: String,
        /// Space-separated scopes the client may ask for, e.g. "time:read orders:read".
        #[arg(long, default_value = "")]
        scopes: String,
    },
    /// List the clients (never their secrets).
    List,
    /// Remove a client; it can obtain no new token.
    Remove { name: String },
}

#[derive(Subcommand)]
enum AccountsAction {
    /// Create an account; its password is read from stdin (one line), never an argument.
    /// Example: `gatehouse accounts create root --email root@example.com --role admin < pw.txt`
    Create {
        username: String,
        #[arg(long)]
        email: String,
        #[arg(long)]
        full_name: Option<String>,
        /// `admin` or `user`.
        #[arg(long, default_value = "user")]
        role: String,
        /// Space-separated scopes, e.g. "time:read".
        #[arg(long, default_value = "")]
        scopes: String,
        /// The users service's database (as the service is given it).
        #[arg(
            long,
            env = "GATEHOUSE_DATABASE_URL",
            default_value = "sqlite://data/users.db"
        )]
        database_url: String,
    },
}

#[derive(Subcommand)]
enum KeysAction {
    /// Add a new signing key; the previous one verifies until its tokens expire.
    Rotate,
    /// List the keys and their status.
    List,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Held to the end of `main`: the log lines still queued are written out before exit.
    let _log_writer = telemetry::init(cli.log_format);
    match run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    if matches!(command, Command::Up { .. } | Command::Gateway { .. }) {
        // The serving threads are started before anything listens: a bad `GATEHOUSE_WORKERS`
        // stops the start with its reason, not a gateway that said "listening" and then died.
        kit::workers::handles()?;
    }
    match command {
        Command::Up {
            host,
            gateway_port,
            users_port,
            orders_port,
            clock_port,
            admin_port,
            data_dir,
            config,
            tls,
        } => {
            let shutdown = Shutdown::on_signals();
            let options = UpOptions {
                host,
                gateway_port,
                users_port,
                orders_port,
                clock_port,
                admin_port,
                data_dir,
                config,
                clock: gateway::clock::Clock::System,
                tls,
            };
            let running = up::start(options, shutdown).await?;
            println!("gatehouse is up");
            let scheme = if running.trust.is_some() {
                "https"
            } else {
                "http"
            };
            // A certificate for localhost: the name clients must use to reach it over TLS.
            let public = match running.trust {
                Some(_) => format!("localhost:{}", running.gateway.port()),
                None => running.gateway.to_string(),
            };
            println!("  gateway  {scheme}://{public}");
            println!("  users    http://{} (internal)", running.users);
            println!("  orders   http://{} (internal)", running.orders);
            println!("  clock    http://{} (internal)", running.clock);
            println!(
                "  admin    http://{} (operators: /metrics, /readyz)",
                running.admin
            );
            if running.seeded {
                println!("WARNING: demo accounts were created: admin / a (role admin), test / test (role user).");
                println!("WARNING: they are demo credentials; change or delete them before anyone else can reach this.");
            }
            let trust = match &running.trust {
                Some(ca) => {
                    println!("HTTPS: the certificate is signed by a local CA; trust it for this gateway with curl --cacert {}", ca.display());
                    format!(" --cacert {}", ca.display())
                }
                None => String::new(),
            };
            println!("Sign in: curl -s{trust} -X POST -H 'Content-Type: application/json' -d '{{\"username\":\"admin\",\"password\":\"a\"}}' {scheme}://{public}/api/login");
            running.wait().await
        }
        Command::Accounts {
            action:
                AccountsAction::Create {
                    username,
                    email,
                    full_name,
                    role,
                    scopes,
                    database_url,
                },
        } => {
            let new = gatehouse::accounts::NewAccount {
                database_url,
                username,
                email,
                full_name,
                role,
                scopes: scopes.split_whitespace().map(str::to_owned).collect(),
            };
            let said = gatehouse::accounts::create(new, std::io::stdin().lock()).await?;
            println!("{said}");
            Ok(())
        }
        Command::Probe { url, timeout } => gatehouse::probe::probe(&url, timeout).await,
        Command::Gateway { config } => standalone::gateway(&config, Shutdown::on_signals()).await,
        Command::Service(command) => {
            let (part, options) = command.part();
            standalone::service(part, options, Shutdown::on_signals()).await
        }
        Command::Clients { action, store } => {
            let location = store.location();
            let output = match action {
                ClientsAction::Add { name, scopes } => {
                    admin::add_client(&location, &name, &scopes).await?
                }
                ClientsAction::List => admin::list_clients(&location).await?,
                ClientsAction::Remove { name } => admin::remove_client(&location, &name).await?,
            };
            println!("{output}");
            Ok(())
        }
        Command::Keys { action, store } => {
            let location = store.location();
            let output = match action {
                KeysAction::Rotate => admin::rotate_keys(&location).await?,
                KeysAction::List => admin::list_keys(&location).await?,
            };
            println!("{output}");
            Ok(())
        }
        Command::CheckConfig { file } => {
            let config = gateway::config::load_file(&file, &gateway::config::Vars::new())?;
            println!(
                "{}: valid ({} services, {} routes)",
                file.display(),
                config.services.len(),
                config.routes.len()
            );
            Ok(())
        }
    }
}
