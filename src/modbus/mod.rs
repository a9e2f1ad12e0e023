//! Modbus RTU master over a serial line: silence and stale-input discard before each request,
//! exact-length replies, strict checks, typed requests and errors, adaptive per-unit timeouts
//! and counters. No heap allocation per transaction.
//!
//! - `line`: the [`Line`] the master talks through (serialport's `TTYPort` in production, a
//!   scripted line in unit tests) and the [`SerialSettings`] its timing derives from;
//! - `request`: the typed [`Request`], checked before it reaches the bus;
//! - `frame`: CRC and the strict reply parser, pure functions over bytes;
//! - `assembler`: framing one reply from bytes and instants (pure);
//! - `master`: [`RtuMaster`], a transaction in steps a poll loop drives, and blocking
//!   conveniences on the same steps;
//! - `error`: wire errors, typed exception codes and invalid requests.

mod assembler;
mod error;
mod frame;
mod line;
mod master;
mod request;
#[cfg(test)]
mod scripted;

// What the tests, benchmarks and fuzz targets use; the rest is for the daemon.
pub use error::{ErrorKind, ExceptionCode, ModbusError};
pub use frame::{Response, crc_ok, crc16, reply_frame_len};
pub use line::{Parity, SerialSettings};
pub use master::{RtuMaster, UnitPacing};
pub use request::{ReadFunction, Request, foreign_frame_len, parse_response};

pub(crate) use error::InvalidRequest;
pub(crate) use line::Line;
pub(crate) use master::{Reply, Step};
