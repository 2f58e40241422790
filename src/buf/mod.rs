//! Memory that costs nothing when idle.

pub(crate) mod pool;
