//! dbus-modbus-client: a Modbus RTU driver for Venus OS.
//!
//! Layers, each knowing nothing of the ones beside it:
//! - [`modbus`]: the RTU wire protocol (framing, timing, typed errors, counters);
//! - [`registers`]: register types, decoding and read planning;
//! - [`vedbus`]: the Victron BusItem services, settings and watching other services;
//! - [`devices`]: the SDM230 and Growatt models, their register tables and lifecycle;
//! - [`limiter`]: the dynamic generation limiter (pure policy + write actuator);
//! - [`cli`]: the command line; [`app`]: the wiring and the main loop.
//!
//! The simulated devices the tests, the demo and the benchmarks run against are the workspace
//! crate `modbus-sim` (sim/), which shares no code with this one.

#![warn(unreachable_pub)]

pub mod app;
pub mod cli;
pub mod devices;
pub mod limiter;
pub mod modbus;
mod registers;
pub mod vedbus;
