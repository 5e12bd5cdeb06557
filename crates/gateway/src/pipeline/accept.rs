//! Accept: the gateway's listener is the kit's ([`kit::listener`]), shared with every service:
//! connection caps per address and in all, the header-read and send deadlines, and the drain on
//! shutdown. Here the request path is handed to it as a plain hyper service (no boxing, no
//! tower stack): each request gets a clone of the [`Pipeline`] (a few reference counts).

use std::future::Future;
use std::net::SocketAddr;

use axum::response::Response;
use hyper::body::Incoming;

use super::Pipeline;

impl kit::listener::Handler for Pipeline {
    fn handle(
        self,
        request: http::Request<Incoming>,
        peer: SocketAddr,
    ) -> impl Future<Output = Response> + Send + 'static {
        // Boxed once here: hyper and the listener move the future they are given several
        // times per request, and a pointer is cheaper to move than the whole pipeline's state.
        Box::pin(Pipeline::handle(self, request, peer))
    }
}

/// The connection limits of the gateway's `limits` section, as the listener takes them.
pub fn limits(limits: &crate::config::Limits) -> kit::listener::Limits {
    kit::listener::Limits {
        header_read_timeout: limits.header_read_timeout,
        send_timeout: limits.send_timeout,
        max_connections: limits.max_connections,
        max_connections_per_ip: limits.max_connections_per_ip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_and_the_services_share_the_listeners_defaults() {
        // A file that names no limits: the gateway's defaults, which must be the listener's
        // (a service's file has the same knobs with the same defaults).
        let config = crate::config::parse(
            "services:\n  users: { upstreams: [\"http://127.0.0.1:8101\"] }\nroutes: []\n",
            "gateway.yaml",
            &crate::config::Vars::new(),
        )
        .unwrap();
        assert_eq!(limits(&config.limits), kit::listener::Limits::default());
    }
}
