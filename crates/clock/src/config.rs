//! The clock's configuration: the settings every service has ([`kit::config::ServiceConfig`],
//! its file format in [`kit::config::service`]) over the clock's defaults. It keeps no data, so
//! a file that configures a database is refused.

use kit::config::ServiceDefaults;

/// Port 8103, `/metrics` on 8203; no database.
pub const DEFAULTS: ServiceDefaults = ServiceDefaults {
    name: crate::NAME,
    port: 8103,
    admin_port: 8203,
    keeps_data: false,
};
