//! The limiter's side of a vendor's power-limiting strategy: a limit in watts becomes a
//! [`Setting`] of the inverter, in the inverter's own steps. Which steps, and which registers a
//! setting is written to, is the device file's knowledge (`devices::model::PowerLimiter`); the
//! controller and its actuator only compare and pace settings.

/// A setting of an inverter's power limit, in the inverter's own steps (for a Growatt, whole
/// percent of its rated power). A larger setting allows more power.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Setting(pub u16);

impl Setting {
    /// The signed distance `self − from`, in steps.
    pub fn steps_from(self, from: Setting) -> i32 {
        i32::from(self.0) - i32::from(from.0)
    }
}

impl std::fmt::Display for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A limit in whole percent of the rated power, within `min..=max`.
///
/// Rounding follows the original driver (docs/reference/limiter.md §1.4): a limit is rounded
/// *up* (the inverter may produce up to one point more than the demand, never less); the
/// fail-safe for an export limit is rounded *down* (it must never exceed the export limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PercentOfRated {
    /// The lowest setting a limit is written as (a floor above 0 keeps an inverter connected).
    pub min: u16,
    /// Full power.
    pub max: u16,
}

impl PercentOfRated {
    /// `clamp(ceil(100·W/rated), min, max)`; non-finite → `min`.
    pub fn setting_for(self, watts: f64, rated_w: f64) -> Setting {
        let percent = 100.0 * watts / rated_w;
        if percent.is_nan() {
            return Setting(self.min);
        }
        // The epsilon keeps an exact percent (e.g. 2100 W of 4200 W) from rounding up on float
        // noise.
        let rounded = (percent - 1e-9)
            .ceil()
            .clamp(f64::from(self.min), f64::from(self.max));
        Setting(rounded as u16)
    }

    /// The watts a setting allows (`/dynamicGenerationMaxPower`, the applied `/Ac/PowerLimit`).
    pub fn watts(self, setting: Setting, rated_w: f64) -> f64 {
        f64::from(setting.0) * rated_w / 100.0
    }

    pub fn full_power(self) -> Setting {
        Setting(self.max)
    }

    /// The highest setting whose output stays within `export_limit_w`: the export limit in
    /// whole percent of rated, rounded down (`fraction_of_rated_floor`), at most `max`.
    pub fn failsafe(self, export_limit_w: f64, rated_w: f64) -> Setting {
        Setting(fraction_of_rated_floor(export_limit_w, rated_w, 100).min(self.max))
    }
}

/// `watts` in `1/steps` of the rated power, rounded down, clamped to `0..=steps`; non-finite
/// (e.g. rated power 0: a configuration error) → 0. An export limit expressed this way never
/// lets more out than the limit.
pub(crate) fn fraction_of_rated_floor(watts: f64, rated_w: f64, steps: u16) -> u16 {
    let fraction = (f64::from(steps) * watts / rated_w + 1e-9).floor();
    if !fraction.is_finite() {
        return 0;
    }
    fraction.clamp(0.0, f64::from(steps)) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERCENT: PercentOfRated = PercentOfRated { min: 2, max: 100 };

    #[test]
    fn percent_rounds_up_and_clamps() {
        let rated = 4200.0;
        for (watts, percent) in [
            (-500.0, 2),
            (0.0, 2),
            (84.0, 2),
            (85.0, 3),
            (2100.0, 50),
            (2101.0, 51),
            (4158.0, 99),
            (4159.0, 100),
            (4200.0, 100),
            (9000.0, 100),
            (f64::NAN, 2),
            (f64::INFINITY, 100),
            (f64::NEG_INFINITY, 2),
        ] {
            assert_eq!(
                PERCENT.setting_for(watts, rated),
                Setting(percent),
                "{watts} W"
            );
        }
        assert_eq!(PERCENT.watts(Setting(50), rated), 2100.0);
        assert_eq!(PERCENT.full_power(), Setting(100));
    }

    #[test]
    fn export_limits_round_down_and_clamp() {
        for (export, rated, percent, permille) in [
            (3680.0, 4200.0, 87, 876),
            (2100.0, 4200.0, 50, 500),
            (0.0, 4200.0, 0, 0),
            (-10.0, 4200.0, 0, 0),
            (6000.0, 4200.0, 100, 1000),
            (3680.0, 0.0, 0, 0),
            (f64::NAN, 4200.0, 0, 0),
        ] {
            let case = format!("{export}/{rated}");
            assert_eq!(PERCENT.failsafe(export, rated), Setting(percent), "{case}");
            assert_eq!(
                fraction_of_rated_floor(export, rated, 1000),
                permille,
                "{case}"
            );
        }
        let capped = PercentOfRated { min: 2, max: 90 };
        assert_eq!(capped.failsafe(6000.0, 4200.0), Setting(90));
    }
}
