//! Streaming UTF-8 validation of text messages across fragments and reads.

/// The bytes fed so far can never become valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8;

/// Validates a text message fed in arbitrary pieces, carrying an incomplete
/// code point (at most 3 bytes) from one piece to the next.
#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    pending: Vec<u8>,
}

impl Utf8Validator {
    /// A validator at the start of a message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next piece; fails as soon as the message can no longer be valid.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), InvalidUtf8> {
        self.pending.extend_from_slice(bytes);
        match std::str::from_utf8(&self.pending) {
            Ok(_) => {
                self.pending.clear();
                Ok(())
            }
            Err(e) if e.error_len().is_none() => {
                let valid = e.valid_up_to();
                self.pending.drain(..valid);
                Ok(())
            }
            Err(_) => Err(InvalidUtf8),
        }
    }

    /// Ends the message: an incomplete code point left over is an error.
    /// The validator is reset for the next message either way.
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let complete = self.pending.is_empty();
        self.reset();
        if complete {
            Ok(())
        } else {
            Err(InvalidUtf8)
        }
    }

    /// Forgets any carried bytes.
    pub fn reset(&mut self) {
        self.pending.clear();
    }
}
