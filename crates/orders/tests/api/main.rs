//! The orders service, tested from the outside: the real service on a real socket, a fresh
//! database per test (SQLite, or PostgreSQL when `GATEHOUSE_TEST_POSTGRES` is set), and identity
//! tokens signed the way the gateway signs them. Modules mirror the service's features.
#![allow(clippy::unwrap_used)]

mod helpers;

mod cancel;
mod concurrency;
mod create;
mod idempotency;
mod identity;
mod listing;
mod migrations;
mod observe;
mod openapi;
mod outage;
mod ownership;
mod validation;
