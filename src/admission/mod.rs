//! Admission: deciding who may connect and how fast. So far it holds the
//! PROXY protocol parser, which recovers the real client address behind an
//! L4 load balancer; caps, pacing and the tarpit build on it.

pub mod proxy_protocol;
