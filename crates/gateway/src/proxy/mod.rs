//! The reverse proxy: one pooled client per service ([`upstream`]), header rewriting
//! ([`headers`]), and the forwarding of one request with its failure mapping ([`forward`]).

pub mod forward;
pub mod headers;
pub mod upstream;
