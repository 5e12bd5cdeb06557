//! Observe: metrics and the access log, once the answer's body has gone out.
