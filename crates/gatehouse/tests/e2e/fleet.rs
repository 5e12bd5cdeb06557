//! The names the instance, reload and load tests have always imported (`crate::fleet::Gate`,
//! …); they live in [`crate::harness`], the one harness.
#![allow(unused_imports)]

pub use crate::harness::gateway::{config_head, write_atomically, Gate};
pub use crate::harness::load::{Load, Tally};
pub use crate::harness::upstreams::{Instance, Mode};
pub use crate::harness::{client, wait_for};
