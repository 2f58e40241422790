//! The HTTP answers of Engine.IO routes. Unlike the shard's other plain
//! answers they keep the connection alive: a browser sends its next poll
//! on the same connection.

use std::io::Write;

use crate::engineio::Refusal;
use crate::protocol::deflate::Params as DeflateParams;
use crate::protocol::handshake::Upgrade;

/// How the request that is being answered wants its answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Manner {
    /// The connection stays open for the next request.
    pub(crate) keep_alive: bool,
    /// `Access-Control-Allow-Origin`'s value, where the route allows
    /// another origin.
    pub(crate) cors: Option<Box<str>>,
}

impl Manner {
    /// The same, for an answer after which the connection ends.
    pub(crate) fn closing(&self) -> Self {
        Self {
            keep_alive: false,
            cors: self.cors.clone(),
        }
    }
}

/// The 101 that accepts a WebSocket, with the permessage-deflate
/// agreement if there is one and the CORS header where the route allows
/// another origin.
pub(crate) fn accept(
    upgrade: &Upgrade<'_, '_, '_>,
    deflate: Option<DeflateParams>,
    manner: &Manner,
) -> Vec<u8> {
    let mut response = Vec::new();
    let extensions = deflate.map(|p| p.response());
    upgrade.encode_accept(&mut response, None, extensions.as_deref());
    cors_headers_into_101(&mut response, manner);
    response
}

/// Writes a whole response. An empty `content_type` sends none.
pub(crate) fn encode(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    body: &[u8],
    manner: &Manner,
) {
    let reason = match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        403 => "Forbidden",
        411 => "Length Required",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let connection = if manner.keep_alive {
        "keep-alive"
    } else {
        "close"
    };
    let _ = write!(
        out,
        "HTTP/1.1 {status} {reason}\r\nConnection: {connection}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n",
        body.len()
    );
    if !content_type.is_empty() {
        let _ = write!(out, "Content-Type: {content_type}\r\n");
    }
    cors_headers(out, manner);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// The CORS header of an answer, when the route allows another origin.
pub(crate) fn cors_headers(out: &mut Vec<u8>, manner: &Manner) {
    if let Some(origin) = &manner.cors {
        let _ = write!(out, "Access-Control-Allow-Origin: {origin}\r\n");
        // One named origin may send its cookies (a balancer's sticky
        // cookie among them); `*` never may, by the CORS rules.
        if &**origin != "*" {
            out.extend_from_slice(b"Access-Control-Allow-Credentials: true\r\nVary: Origin\r\n");
        }
    }
}

/// Adds the CORS header to a whole 101 response, before its blank line.
fn cors_headers_into_101(response: &mut Vec<u8>, manner: &Manner) {
    if manner.cors.is_some() && response.ends_with(b"\r\n\r\n") {
        response.truncate(response.len() - 2);
        cors_headers(response, manner);
        response.extend_from_slice(b"\r\n");
    }
}

/// A CORS preflight's answer: 204 with the methods and the headers the
/// browser asked for.
pub(crate) fn encode_preflight(out: &mut Vec<u8>, asked_headers: Option<&[u8]>, manner: &Manner) {
    let connection = if manner.keep_alive {
        "keep-alive"
    } else {
        "close"
    };
    let _ = write!(
        out,
        "HTTP/1.1 204 No Content\r\nConnection: {connection}\r\nContent-Length: 0\r\nAccess-Control-Allow-Methods: GET,HEAD,PUT,PATCH,POST,DELETE\r\n"
    );
    if let Some(headers) = asked_headers {
        out.extend_from_slice(b"Access-Control-Allow-Headers: ");
        out.extend_from_slice(headers);
        out.extend_from_slice(b"\r\nVary: Access-Control-Request-Headers\r\n");
    }
    cors_headers(out, manner);
    out.extend_from_slice(b"\r\n");
}

/// What a refused polling request is answered: the reference's JSON
/// error (an over-long body: 413 with nothing in it).
pub(crate) fn refusal(refusal: Refusal) -> (u16, &'static str, &'static [u8]) {
    match refusal {
        Refusal::PayloadTooLarge => (413, "", b""),
        r => (r.status(), Refusal::CONTENT_TYPE, r.body().as_bytes()),
    }
}

/// A refused WebSocket upgrade, as the reference answers one: 400 with
/// the reason as `text/html`, then the connection closes.
pub(crate) fn refused_upgrade(out: &mut Vec<u8>, refusal: Refusal) {
    let manner = Manner::default();
    let status = match refusal {
        Refusal::Forbidden => 403,
        _ => 400,
    };
    encode(
        out,
        status,
        "text/html",
        refusal.message().as_bytes(),
        &manner,
    );
}
