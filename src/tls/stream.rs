//! One connection's TLS record layer, driven with non-blocking socket I/O.

use std::io::{self, ErrorKind, IoSlice, Read, Write};

use rustls::ServerConnection;

/// A connection's TLS state: ciphertext in from the socket, plaintext out
/// to the `Session`, and the reverse for replies.
#[derive(Debug)]
pub(crate) struct TlsStream {
    conn: ServerConnection,
}

impl TlsStream {
    pub(super) fn new(conn: ServerConnection) -> Self {
        Self { conn }
    }

    /// Reads plaintext into `buf`, pulling ciphertext from `socket` as
    /// needed. `Ok(0)` is the end of input (close_notify or FIN);
    /// `WouldBlock` means the socket is drained. A protocol error queues an
    /// alert, makes one attempt to send it and fails: the caller drops the
    /// connection, so plain HTTP or garbage on a TLS port ends at once.
    pub(crate) fn read<S: Read + Write>(
        &mut self,
        socket: &mut S,
        buf: &mut [u8],
    ) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                // A FIN without close_notify: still just the end of input,
                // since WebSocket has its own close handshake.
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            if self.conn.read_tls(socket)? == 0 {
                return Ok(0);
            }
            if let Err(e) = self.conn.process_new_packets() {
                tracing::debug!("closing: TLS error: {e}");
                let _ = self.drain(socket);
                return Err(io::Error::new(ErrorKind::InvalidData, e));
            }
        }
    }

    /// Encrypts as much of `bufs` as rustls' bounded send buffer takes and
    /// writes records to `socket`; returns the plaintext bytes taken.
    /// `WouldBlock` when earlier records are still waiting for the socket.
    pub(crate) fn write<S: Write>(
        &mut self,
        socket: &mut S,
        bufs: &[IoSlice<'_>],
    ) -> io::Result<usize> {
        self.drain(socket)?;
        let taken = self.conn.writer().write_vectored(bufs)?;
        match self.drain(socket) {
            Err(e) if e.kind() != ErrorKind::WouldBlock => Err(e),
            _ => Ok(taken),
        }
    }

    /// Writes every encrypted record queued (handshake messages, alerts,
    /// data) until none is left or the socket would block.
    pub(crate) fn drain<S: Write>(&mut self, socket: &mut S) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(socket) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Whether encrypted records are still waiting for the socket.
    pub(crate) fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Queues close_notify (once, however often called) so the peer can
    /// tell our end of output from a truncation.
    pub(crate) fn close_notify(&mut self) {
        self.conn.send_close_notify();
    }
}
