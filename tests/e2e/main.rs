//! The end-to-end and integration tests, one binary of modules (testkit/ holds what they
//! share with the benchmarks and examples):
//! - the real `dbus-modbus-client` binary against the simulator (the `modbus-sim` crate) on a
//!   pty, a private dbus-daemon and the Victron stand-ins: [`devices`], [`faults`], [`limiter`],
//!   [`dropin`] (a GX with the original's history and an ESS), [`fidelity`] (the devices'
//!   documented quirks);
//!   [`schedule`] (each device's pace, from the simulator's request log);
//! - the RTU master against the simulator and the response parser: [`modbus_rtu`],
//!   [`modbus_parser_fuzz`] (the simulator as a process is tested in its own crate, sim/tests:
//!   Cargo hands a package's tests only that package's binaries);
//! - the daemon's D-Bus layer in this process, seen by a separate client and by Debian's D-Bus
//!   tools: [`vedbus_service`], [`vedbus_settings`], [`vedbus_watcher`], [`vedbus_cli`],
//!   [`setvalue_fuzz`];
//! - the install scripts against a fake GX root: [`install`].
//!
//! tests/modbus_no_alloc.rs is a binary of its own: it counts allocations with a global
//! allocator, which would count every other test's too.

/// The daemon binary under test.
const EXE: &str = env!("CARGO_BIN_EXE_dbus-modbus-client");

mod devices;
mod dropin;
mod faults;
mod fidelity;
mod in_process;
mod install;
mod limiter;
mod modbus_parser_fuzz;
mod modbus_rtu;
mod schedule;
mod setvalue_fuzz;
mod vedbus_cli;
mod vedbus_service;
mod vedbus_settings;
mod vedbus_watcher;
