//! Simulated Eastron SDM230 and Growatt MIN on a pseudo-terminal, for the tests, the demo and
//! the benchmarks of dbus-modbus-client. It shares no code with the daemon: its own framing,
//! CRC and wire timing, so that it checks the daemon instead of agreeing with it.
//!
//! - [`server`]: the thread that serves the pty, timing, faults and the write log;
//! - [`sdm230`], [`growatt`]: each device's register map, defaults and physics;
//! - [`device`]: a device's values and registers; [`plant`]: load, PV and inverter coupled;
//! - [`bank`], [`frame`], [`timing`]: registers, RTU framing and CRC, wire time.

pub mod bank;
pub mod device;
pub mod frame;
pub mod growatt;
pub mod plant;
pub mod rng;
pub mod sdm230;
pub mod server;
pub mod timing;

pub use bank::{
    Bank, EXCEPTION_ILLEGAL_ADDRESS, EXCEPTION_ILLEGAL_FUNCTION, EXCEPTION_ILLEGAL_VALUE,
    RegisterKind,
};
pub use device::{Device, Model};
pub use growatt::{
    GROWATT_CONTROL_FIRMWARE, GROWATT_DEVICE_TYPE, GROWATT_FIRMWARE, GROWATT_RATED_VA_TENTHS,
    GROWATT_SERIAL, GrowattProfile, GrowattValues, POWER_RATE_UNLIMITED,
};
pub use plant::Plant;
pub use rng::Rng;
pub use sdm230::{METER_CODE, METER_FIRMWARE, METER_SERIAL, MeterProfile, MeterValues};
pub use server::{
    FaultKind, METER_SILENCE, MeterSilence, REQUEST_LOG_LEN, RequestRecord, SimConfig, SimError,
    SimHandle, Simulator, WRITE_LOG_LEN, WriteRecord,
};
pub use timing::{LineSettings, Parity};
