//! The closed-loop limiter rig: the [`Rig`] with battery and vebus stand-ins and the
//! simulator's realistic 9600 baud timing and plant model, and what the limiter's tests and
//! benchmark read from it: the HR3 writes the simulated inverter received and the PV
//! inverter's status.

use std::time::{Duration, Instant, SystemTime};

use modbus_sim::{Plant, SimConfig};

use crate::rig::{INVERTER, Rig, RigOptions, ServiceSpec, pv_name};
use crate::{SETTINGS_SERVICE, Value, wait_for};

/// The Growatt's active power rate register.
pub const HR3: u16 = 3;
/// The Growatt's export limit fail-safe rate: the last register of the G100 set-up.
pub const HR_EXPORT_FAILSAFE: u16 = 3000;
pub const ENERGY_DIFFERENCE: &str = "/Settings/DynamicGeneration/energyDifference";
pub const DERATE_GENERATION: &str = "/Settings/DynamicGeneration/derateGeneration";
pub const MODE: &str = "/Settings/DynamicGeneration/Mode";
pub const EXPORT_LIMIT: &str = "/Settings/DynamicGeneration/ExportLimit";
pub const BATTERY: &str = "com.victronenergy.battery.test";
pub const VEBUS: &str = "com.victronenergy.vebus.test";
/// Identification, G100 set-up and the first publish on a loaded machine.
pub const START_WAIT: Duration = Duration::from_secs(30);

/// One HR3 write the simulator received.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hr3Write {
    pub at: SystemTime,
    pub percent: u16,
}

impl Rig {
    /// Starts the closed loop and waits until the PV inverter's service is up and the G100
    /// set-up is done; `daemon_args` come after `-s PORT --dbus ADDRESS -r 9600`.
    pub fn start_limiter(
        exe: &str,
        plant: Plant,
        daemon_args: &[&str],
        battery: &[(&'static str, Value)],
        vebus: &[(&'static str, Value)],
    ) -> Rig {
        let services = vec![
            (BATTERY.to_string(), battery.to_vec()),
            (VEBUS.to_string(), vebus.to_vec()),
        ];
        Rig::start_limiter_with(exe, plant, daemon_args, services)
    }

    /// [`Rig::start_limiter`] with any Victron services beside the daemon (several batteries,
    /// a system service).
    pub fn start_limiter_with(
        exe: &str,
        plant: Plant,
        daemon_args: &[&str],
        services: Vec<ServiceSpec>,
    ) -> Rig {
        Rig::start_limiter_on(exe, SimConfig::default(), plant, daemon_args, services)
    }

    /// [`Rig::start_limiter_with`] on these simulated devices (`sim`'s timing and plant are set
    /// here).
    pub fn start_limiter_on(
        exe: &str,
        sim: SimConfig,
        plant: Plant,
        daemon_args: &[&str],
        services: Vec<ServiceSpec>,
    ) -> Rig {
        let opts = RigOptions {
            sim: SimConfig {
                realistic: true,
                plant: Some(plant),
                ..sim
            },
            args: daemon_args.iter().map(|a| a.to_string()).collect(),
            services,
            ..RigOptions::default()
        };
        let rig = Rig::start(exe, opts);
        let up = wait_for(START_WAIT, || rig.has(&pv_name()) && rig.g100_setup_done());
        assert!(up, "daemon did not come up; log:\n{}", rig.daemon.log());
        rig
    }

    /// Whether the simulated inverter has received the G100 fail-safe rate (the last write of
    /// the set-up).
    fn g100_setup_done(&self) -> bool {
        self.sim
            .writes()
            .iter()
            .any(|w| w.unit == INVERTER && w.addr == HR_EXPORT_FAILSAFE)
    }

    /// Every HR3 write to the inverter so far, oldest first.
    pub fn hr3_writes(&self) -> Vec<Hr3Write> {
        self.sim
            .writes()
            .into_iter()
            .filter(|w| w.unit == INVERTER && w.addr == HR3)
            .map(|w| Hr3Write {
                at: w.at,
                percent: w.value,
            })
            .collect()
    }

    /// The HR3 writes after the first `skip`.
    pub fn hr3_since(&self, skip: usize) -> Vec<u16> {
        self.hr3_writes()
            .into_iter()
            .skip(skip)
            .map(|w| w.percent)
            .collect()
    }

    /// Waits until more than `skip` HR3 writes exist; the new ones.
    pub fn wait_hr3_after(&self, skip: usize, timeout: Duration) -> Vec<u16> {
        wait_for(timeout, || self.hr3_writes().len() > skip);
        self.hr3_since(skip)
    }

    /// The PV inverter's `/dynamicGenerationStatus` (or what it holds instead of a text).
    pub fn status(&self) -> String {
        match self.value(&pv_name(), "/dynamicGenerationStatus") {
            Value::Text(s) => s,
            other => format!("{other:?}"),
        }
    }

    /// Waits until `/dynamicGenerationStatus` reads `want`; the last text seen.
    pub fn wait_status(&self, want: &str, timeout: Duration) -> String {
        let mut last = String::new();
        wait_for(timeout, || {
            last = self.status();
            last == want
        });
        last
    }

    /// SetValue on the settings service; its return code.
    pub fn set_setting<T: dbus::arg::Arg + dbus::arg::Append>(&self, path: &str, v: T) -> i32 {
        self.client.set_value(SETTINGS_SERVICE, path, v)
    }

    /// SetValue of `/Ac/PowerLimit` on the PV inverter; its return code.
    pub fn set_power_limit(&self, watts: f64) -> i32 {
        self.client.set_value(&pv_name(), "/Ac/PowerLimit", watts)
    }

    /// Turns the limiter on in range: the simulator's consumption (import − export) is about
    /// 913 kWh, so 950 puts the offset at about −37 kWh.
    pub fn enable_limiter(&self) {
        assert_eq!(self.set_setting(ENERGY_DIFFERENCE, 950i32), 0);
        assert_eq!(self.set_setting(DERATE_GENERATION, 1i32), 0);
    }

    /// Changes the plant's house load, keeping the rest; the instant it took effect.
    pub fn set_load(&self, load_w: f64) -> Instant {
        let plant = self.sim.plant().unwrap_or_default();
        self.sim.set_plant(Some(Plant { load_w, ..plant }));
        Instant::now()
    }
}

/// The HR3 percent the limiter should write for a demand of `watts` on a 4200 W inverter
/// (the smallest whole percent that covers it, 2…100: testkit/README.md), computed
/// independently of the daemon's code.
pub fn expected_percent(watts: f64) -> u16 {
    let mut p = 2u16;
    while p < 100 && f64::from(p) * 42.0 < watts {
        p += 1;
    }
    p
}
