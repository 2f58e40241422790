//! One connection's TLS record layer, driven from a non-blocking socket
//! (epoll) or with the buffers of completed operations (io_uring).

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

    /// Completion-driven input (io_uring): decrypts `ciphertext`, all of
    /// it, appending the plaintext to `plaintext`. `Ok(true)` once the peer
    /// sent close_notify. On a protocol error the alert is queued for
    /// [`Self::encrypt`] to pick up, and the connection must end.
    pub(crate) fn decrypt(
        &mut self,
        mut ciphertext: &[u8],
        plaintext: &mut Vec<u8>,
    ) -> io::Result<bool> {
        let mut closed = false;
        while !ciphertext.is_empty() && !closed {
            // Plaintext is drained below before more is read, so rustls'
            // received-plaintext bound is never what stops this.
            if self.conn.read_tls(&mut ciphertext)? == 0 {
                break;
            }
            if let Err(e) = self.conn.process_new_packets() {
                tracing::debug!("closing: TLS error: {e}");
                return Err(io::Error::new(ErrorKind::InvalidData, e));
            }
            loop {
                let start = plaintext.len();
                plaintext.resize(start + 16 * 1024, 0);
                let read = self.conn.reader().read(&mut plaintext[start..]);
                let n = *read.as_ref().unwrap_or(&0);
                plaintext.truncate(start + n);
                match read {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }
        Ok(closed)
    }

    /// Completion-driven output (io_uring): encrypts all of `plaintext`
    /// and appends every queued record (handshake messages, alerts, data)
    /// to `records`, ready for one send.
    pub(crate) fn encrypt(
        &mut self,
        mut plaintext: &[u8],
        records: &mut Vec<u8>,
    ) -> io::Result<()> {
        while !plaintext.is_empty() {
            let n = self.conn.writer().write(plaintext)?;
            if n == 0 {
                // Only before the handshake completes could plaintext stay
                // buffered, and a session says nothing before that.
                return Err(io::Error::other("TLS output before the handshake"));
            }
            plaintext = &plaintext[n..];
            self.drain(records)?;
        }
        self.drain(records)
    }

    /// Queues close_notify (once, however often called) so the peer can
    /// tell our end of output from a truncation.
    pub(crate) fn close_notify(&mut self) {
        self.conn.send_close_notify();
    }
}
