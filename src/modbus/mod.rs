//! Modbus RTU master over a serial line: silence and stale-input discard before each request,
//! exact-length replies, strict checks, typed requests and errors, adaptive per-unit timeouts
//! and counters. No heap allocation per transaction.
//!
//! Private modules; this file re-exports what other layers and the tests use.
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

// The public surface: what the tests, benchmarks and fuzz targets use, and the types the
// signatures of those items name (a master's line, replies, steps, counters).
pub use error::{ErrorKind, ExceptionCode, InvalidRequest, ModbusError};
pub use frame::{Response, crc_ok, crc16, reply_frame_len};
pub use line::{Line, Parity, SerialSettings};
pub use master::{Reply, RtuMaster, Step, UnitPacing, UnitStats};
pub use request::{ReadFunction, Request, foreign_frame_len, parse_response};
