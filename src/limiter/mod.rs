//! The dynamic generation limiter, as pure code (limiter.md).
//!
//! - [`policy`]: `decide(inputs, settings, now) -> Decision`, a pure function of the latest
//!   values (with their timestamps), the settings and the time;
//! - [`actuator`]: turns decisions into Growatt holding-register-3 writes (percent of rated
//!   power), deduplicated, deadbanded and paced by time; the G100 set-up registers;
//! - [`reference`]: the original driver's per-event smoothing, kept only so benchmarks can
//!   compare it with the new actuator in the same run.
//!
//! Nothing here knows how values arrive (no D-Bus, no Modbus): the daemon feeds readings in
//! and performs the writes the actuator asks for.

pub mod actuator;
pub mod policy;
pub mod reference;

pub use actuator::{
    Actuator, ActuatorConfig, G100_SETUP_LEN, HR_ACTIVE_POWER_RATE, HR_EXPORT_LIMIT_FAILSAFE_RATE,
    HR_EXPORT_LIMIT_RATE, HR_EXPORT_LIMIT_SOURCE, MAX_PERCENT, MIN_PERCENT, g100_permille,
    g100_setup, limit_percent, percent_to_watts,
};
pub use policy::{
    Decision, ExternalLimit, Inputs, Mode, Reading, Settings, Status, Target, decide,
    pv_extrapolated,
};
pub use reference::ReferenceSmoother;
