//! The dynamic generation limiter, as pure code (docs/reference/limiter.md).
//!
//! - [`policy`]: `decide(inputs, settings, now) -> Decision`, a pure function of the latest
//!   values (with their timestamps), the settings and the time;
//! - [`actuator`]: turns decisions into writes of the inverter's limit setting, deduplicated,
//!   deadbanded and paced by time;
//! - [`strategy`]: the vendor-neutral side of an inverter's power-limiting strategy: how a limit
//!   in watts becomes a [`Setting`];
//! - [`estimate`]: the inverter's expected output between PV readings (dead time, ramp, cap),
//!   corrected by each reading;
//! - [`controller`]: the step the daemon takes per decision (inputs at the grid reading's time,
//!   decide, next write), shared with the benchmarks;
//! - [`reference`](mod@reference): the original driver's per-event smoothing, kept only so benchmarks can
//!   compare it with the new actuator in the same run.
//!
//! Nothing here knows how values arrive or which registers a setting goes to (no D-Bus, no
//! Modbus): the daemon feeds readings in and performs the writes the controller asks for.

pub mod actuator;
pub mod controller;
pub mod estimate;
pub mod policy;
pub mod reference;
pub mod strategy;

pub use actuator::{Actuator, ActuatorConfig};
pub use controller::Controller;
pub use estimate::{OutputEstimate, PlantModel};
pub use policy::{
    BatteryReadings, Decision, ExternalLimit, Inputs, Mode, Reading, Settings, Status, Target,
    decide, pv_extrapolated,
};
pub use reference::ReferenceSmoother;
pub use strategy::{PercentOfRated, Setting};
