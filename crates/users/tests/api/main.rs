//! The users service, tested from the outside: the real service on a real socket, a fresh
//! database per test (SQLite, or PostgreSQL when `GATEHOUSE_TEST_POSTGRES` is set), and identity
//! tokens signed the way the gateway signs them. Modules mirror the service's features.
#![allow(clippy::unwrap_used)]

mod helpers;

mod admin_users;
mod credentials;
mod current_password;
mod cutoffs;
mod identity;
mod last_admin;
mod me;
mod openapi;
mod outage;
mod secrets;
mod seed;
mod uniqueness;
mod validation;
