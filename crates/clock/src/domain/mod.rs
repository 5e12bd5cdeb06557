//! What the clock answers, as types: how much of the time a caller may read ([`Reading`]),
//! the answer itself ([`Time`]), and where the time comes from ([`Now`]).

mod time;

pub use time::{Now, Reading, Time};
