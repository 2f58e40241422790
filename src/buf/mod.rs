//! Memory that costs nothing when idle, and bounds on what queues hold.

pub(crate) mod budget;
pub(crate) mod pool;
