//! dbus-modbus-client: a Modbus RTU driver for Venus OS.
//!
//! Layers, each knowing only the ones below it (docs/architecture.md):
//! - [`modbus`]: the RTU wire protocol (framing, timing, typed errors, counters);
//! - `registers` (private): register types, decoding and read planning;
//! - [`vedbus`]: the Victron BusItem services, settings and watching other services;
//! - [`limiter`]: the dynamic generation limiter (pure policy, actuator, the controller step);
//! - [`devices`]: the SDM230 and Growatt models, their register tables and lifecycle;
//! - [`cli`]: the command line; [`app`]: the wiring and the main loop.
//!
//! Every layer's submodules are private: a layer's `mod.rs` re-exports with `pub use` only
//! what the binary, the tests, the benchmarks and the fuzz targets use (and the types those
//! items' signatures name), and with `pub(crate) use` what the other layers use. With
//! `unreachable_pub` nothing else is `pub`, so rustc reports the crate-internal code nothing uses.
//!
//! The simulated devices the tests, the demo and the benchmarks run against are the workspace
//! crate `modbus-sim` (sim/), which shares no code with this one.

#![warn(unreachable_pub, unnameable_types)]

pub mod app;
pub mod cli;
pub mod devices;
pub mod limiter;
pub mod modbus;
mod registers;
pub mod vedbus;
