//! The routing snapshot: the configuration, its route table and its services, as one value a
//! reload replaces at once. Each request loads the snapshot current when it starts and keeps it
//! to the end, so a reload never shows a request half of one configuration and half of another.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::clock::Clock;
use crate::config::GatewayConfig;
use crate::proxy::upstream::Upstreams;
use crate::router::RouteTable;

/// What a reload replaces, as one: the configuration, its route table, its services.
pub struct Routing {
    /// Its start-only settings (listen, store, state, tokens, auth) are always those the
    /// gateway started with.
    pub config: Arc<GatewayConfig>,
    pub table: Arc<RouteTable>,
    pub upstreams: Arc<Upstreams>,
}

impl Routing {
    /// The first routing of a gateway starting with `config`, its services on `clock` (every
    /// later routing keeps it: see [`Upstreams::succeeding`]).
    pub fn first(config: GatewayConfig, clock: Clock) -> anyhow::Result<Self> {
        let table = RouteTable::build(&config.routes)?;
        let upstreams = Upstreams::new(&config.services, clock);
        Ok(Self {
            config: Arc::new(config),
            table: Arc::new(table),
            upstreams: Arc::new(upstreams),
        })
    }
}

/// The routing in force, swapped whole by a reload. Reading it takes no lock: every request
/// reads it, and a lock shared by every core would make each read a contended write.
pub struct CurrentRouting(ArcSwap<Routing>);

impl CurrentRouting {
    pub fn new(routing: Routing) -> Self {
        Self(ArcSwap::from_pointee(routing))
    }

    /// The routing in force now; a request keeps the one it started with.
    pub fn load(&self) -> Arc<Routing> {
        self.0.load_full()
    }

    /// Puts `next` in force for the requests that start from now on.
    pub fn replace(&self, next: Arc<Routing>) {
        self.0.store(next);
    }
}
