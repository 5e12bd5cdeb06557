//! The reverse proxy: the services and their instances ([`upstream`], [`instance`]), the
//! connections to them ([`pool`], over [`transport`], with [`tls`] for `https://` ones), active
//! health checks ([`health`]), when to retry ([`retry`]), header rewriting ([`headers`]), the
//! client's request body ([`request_body`]), and the forwarding of one request with its failure
//! mapping ([`forward`]); a WebSocket's own connection to an instance ([`websocket`]) and the
//! splice of the two upgraded connections ([`splice`]).

pub mod forward;
pub mod headers;
pub mod health;
pub mod instance;
pub mod pool;
pub mod request_body;
pub mod retry;
pub mod splice;
pub mod tls;
pub mod transport;
pub mod upstream;
pub mod websocket;
