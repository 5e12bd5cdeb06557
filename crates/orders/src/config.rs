//! The orders service's configuration: the settings every service has
//! ([`kit::config::ServiceConfig`], its file format in [`kit::config::service`]) over orders'
//! defaults.

use kit::config::ServiceDefaults;

/// Port 8102, `/metrics` on 8202, `sqlite://data/orders.db`.
pub const DEFAULTS: ServiceDefaults = ServiceDefaults {
    name: crate::NAME,
    port: 8102,
    admin_port: 8202,
    keeps_data: true,
};
