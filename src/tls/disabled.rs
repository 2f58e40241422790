//! Stand-ins when the crate is built without the `tls` feature: TLS flags
//! are refused, and no connection can ever carry TLS state.

use std::io::{self, IoSlice, Read, Write};

use super::TlsConfig;

/// No certificate can be loaded in this build.
#[derive(Debug)]
pub(crate) enum Certs {}

/// No connection carries TLS in this build.
#[derive(Debug)]
pub(crate) enum TlsStream {}

const OFF: &str = "this surge was built without the `tls` feature";

impl Certs {
    pub(crate) fn load(_: &TlsConfig) -> Result<Self, String> {
        Err(OFF.into())
    }
    pub(crate) fn accept(&self) -> Result<TlsStream, String> {
        match *self {}
    }
    pub(crate) fn reload_logged(&self) {
        match *self {}
    }
}

impl TlsStream {
    pub(crate) fn read<S: Read + Write>(&mut self, _: &mut S, _: &mut [u8]) -> io::Result<usize> {
        match *self {}
    }
    pub(crate) fn write<S: Write>(&mut self, _: &mut S, _: &[IoSlice<'_>]) -> io::Result<usize> {
        match *self {}
    }
    pub(crate) fn drain<S: Write>(&mut self, _: &mut S) -> io::Result<()> {
        match *self {}
    }
    pub(crate) fn decrypt(&mut self, _: &[u8], _: &mut Vec<u8>) -> io::Result<bool> {
        match *self {}
    }
    pub(crate) fn encrypt(&mut self, _: &[u8], _: &mut Vec<u8>) -> io::Result<()> {
        match *self {}
    }
    pub(crate) fn close_notify(&mut self) {
        match *self {}
    }
}

pub(crate) fn check(_: &TlsConfig) -> Result<(), String> {
    Err(OFF.into())
}
