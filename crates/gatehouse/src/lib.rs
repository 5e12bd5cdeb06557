//! Wiring of the gatehouse parts into runnable processes; `main.rs` only parses the command line.
//!
//! # Layout
//! - [`up`]: the whole system in one process, each part on its own port, talking real HTTP.
//! - [`standalone`]: one part per process, as deployed.
//! - [`admin`]: commands on the gateway's store (machine clients), beside a running gateway.
//! - [`probe`]: the container image's HTTP health check.
//! - [`accounts`]: an account made in the users database (a deployment's first admin).

pub mod accounts;
pub mod admin;
pub mod probe;
pub mod standalone;
pub mod up;

/// The routes of the bundled services, for `up` when no configuration file is at hand.
pub const EMBEDDED_CONFIG: &str = include_str!("../../../config/gateway.yaml");

/// The gateway configuration file `up` and the admin commands use: `file` if given, else
/// ./config/gateway.yaml when it exists; `None` means the embedded one.
pub fn config_file(file: Option<&std::path::Path>) -> Option<std::path::PathBuf> {
    match file {
        Some(path) => Some(path.to_owned()),
        None => {
            let default = std::path::Path::new("config/gateway.yaml");
            default.exists().then(|| default.to_owned())
        }
    }
}

/// Loads the configuration [`config_file`] names, or the embedded one.
pub fn load_config(
    file: Option<&std::path::Path>,
    vars: &gateway::config::Vars,
) -> Result<gateway::config::GatewayConfig, gateway::config::ConfigError> {
    match config_file(file) {
        Some(path) => gateway::config::load_file(&path, vars),
        None => gateway::config::parse(EMBEDDED_CONFIG, "(embedded config/gateway.yaml)", vars),
    }
}
