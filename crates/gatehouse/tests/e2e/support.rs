//! The names the in-process tests have always imported (`crate::support::spawn_app`, …); they
//! live in [`crate::harness`], the one harness.
#![allow(unused_imports)]

pub use crate::harness::system::{assert_problem, spawn_app, spawn_app_with, TestApp};
