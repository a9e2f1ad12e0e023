//! The dynamic generation limiter, as pure code (docs/reference/limiter.md).
//!
//! Private modules; this file re-exports what the app and the benchmarks use.
//!
//! - `policy`: [`decide`]`(inputs, settings, now) -> `[`Decision`], a pure function of the
//!   latest values (with their timestamps), the settings and the time;
//! - `actuator`: turns decisions into writes of the inverter's limit setting, deduplicated,
//!   deadbanded and paced by time (internal to the controller);
//! - `strategy`: the vendor-neutral side of an inverter's power-limiting strategy: how a limit
//!   in watts becomes a [`Setting`] ([`PercentOfRated`]);
//! - `controller`: [`Controller`], the step the daemon takes per decision (inputs at the grid
//!   reading's time, decide, next write), shared with the benchmarks;
//! - `estimate`: `OutputEstimate`, the inverter's expected output between PV readings (dead
//!   time, ramp, cap), corrected by each reading ([`PlantModel`]);
//! - `reference`: [`ReferenceSmoother`], the original driver's per-event smoothing, kept only so
//!   benchmarks can compare it with the new actuator in the same run.
//!
//! Nothing here knows how values arrive or which registers a setting goes to (no D-Bus, no
//! Modbus): the daemon feeds readings in and performs the writes the controller asks for.

mod actuator;
mod controller;
mod estimate;
mod policy;
mod reference;
mod strategy;

// The public surface: what the benchmarks drive (the same controller as the daemon) and the
// types its methods name. `fraction_of_rated_floor` is for the device files.
pub use controller::{Controller, pv_read_interval};
pub use estimate::PlantModel;
pub use policy::{
    BatteryReadings, Decision, ExternalLimit, Inputs, Mode, Reading, Settings, Status, Target,
    decide,
};
pub use reference::ReferenceSmoother;
pub use strategy::{PercentOfRated, Setting};

pub(crate) use strategy::fraction_of_rated_floor;
