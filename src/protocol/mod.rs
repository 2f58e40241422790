//! The sans-IO RFC 6455 core: bytes in, events and bytes out.

pub mod mask;
pub mod utf8;
