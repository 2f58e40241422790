//! surge
