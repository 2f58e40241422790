//! The live status page at `GET /` of servers with a ticker feed: one
//! self-contained HTML file (inline CSS and JS, nothing fetched from
//! elsewhere) that follows `/ticker` over a WebSocket and polls `/metrics`.

use crate::protocol::handshake;

/// The page, built into the binary so that a server needs no files.
const PAGE: &str = include_str!("page.html");

/// Writes the page as a complete response that closes the connection.
pub(crate) fn encode_page(out: &mut Vec<u8>) {
    handshake::encode_response(
        out,
        200,
        "text/html; charset=utf-8",
        "Cache-Control: no-store\r\n",
        PAGE,
    );
}
