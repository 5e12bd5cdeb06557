//! The users service's configuration: the settings every service has
//! ([`kit::config::ServiceConfig`], its file format in [`kit::config::service`]) over users'
//! defaults.

use kit::config::ServiceDefaults;

/// Port 8101, `/metrics` on 8201, `sqlite://data/users.db`.
pub const DEFAULTS: ServiceDefaults = ServiceDefaults {
    name: crate::NAME,
    port: 8101,
    admin_port: 8201,
    keeps_data: true,
};
