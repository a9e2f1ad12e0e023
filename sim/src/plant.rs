//! The optional plant model: house load, available PV and an inverter that ramps towards its
//! HR3 power rate, coupled through the meter, so the daemon's limiter can run in closed loop.

use std::time::Duration;

use crate::growatt::{self, GrowattValues};
use crate::sdm230::MeterValues;

/// House load, available PV and ramp of the plant model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plant {
    pub load_w: f64,
    pub pv_available_w: f64,
    /// How fast the inverter output follows its target, W per second.
    pub ramp_w_per_s: f64,
}

impl Default for Plant {
    fn default() -> Self {
        Self {
            load_w: 500.0,
            pv_available_w: 3000.0,
            ramp_w_per_s: 1000.0,
        }
    }
}

impl Plant {
    /// Moves the inverter's output over `dt` towards min(PV available, `rate_percent` × rated)
    /// and sets the meter to load − inverter output.
    pub(crate) fn step(
        &self,
        dt: Duration,
        rate_percent: f64,
        rated_w: f64,
        meter: &mut MeterValues,
        inverter: &mut GrowattValues,
    ) {
        let target = self
            .pv_available_w
            .max(0.0)
            .min(rate_percent.min(100.0) / 100.0 * rated_w);
        let max_step = self.ramp_w_per_s * dt.as_secs_f64();
        let delta = (target - inverter.ac_power).clamp(-max_step, max_step);
        inverter.ac_power += delta;
        inverter.ac_current = inverter.ac_power / inverter.ac_voltage.max(1.0);
        // A 97 % efficient inverter, both trackers alike.
        inverter.set_pv_power(inverter.ac_power / 0.97);
        inverter.status = if self.pv_available_w > 0.0 { 1.0 } else { 0.0 };
        meter.power = self.load_w - inverter.ac_power;
        meter.current = meter.power.abs() / meter.voltage.max(1.0);
        meter.apparent = meter.power.abs() / meter.pf.abs().max(0.01);
    }
}

/// The power rate HR3 holds, percent (255, not limited, is clamped to 100 by the step).
pub(crate) fn power_rate(holding: &mut crate::bank::Bank) -> f64 {
    f64::from(holding.get(growatt::HR_POWER_RATE).unwrap_or(100))
}
