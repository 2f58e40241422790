//! permessage-deflate (RFC 7692): negotiation and the per-message codec.

mod codec;
mod negotiate;

pub(crate) use codec::grow_within;
pub use codec::{InflateError, PerMessageDeflate};
pub use negotiate::{negotiate, DeflatePolicy, Params};
