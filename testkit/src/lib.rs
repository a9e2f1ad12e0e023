//! Test support of dbus-modbus-client, shared by the end-to-end tests, the benchmarks and the
//! examples: real parts (a private `dbus-daemon`, the daemon binary as a subprocess, the
//! simulator of the `modbus-sim` crate) and stand-ins for the Victron services that cannot be
//! installed here (localsettings, a battery, a vebus, systemcalc's battery choice), following
//! Victron's own code (testkit/README.md). Nothing here uses the daemon's library: the stand-ins and the client
//! speak D-Bus through the dbus crate, so they check the daemon instead of sharing its bugs.
//!
//! ```ignore
//! let bus = PrivateBus::start();                           // killed on drop
//! let settings = FakeSettings::start(&bus.address);        // com.victronenergy.settings
//! let battery = FakeService::start(&bus.address, "com.victronenergy.battery.t", &[("/Soc", Value::Double(50.0))]);
//! battery.set("/Soc", Value::Double(51.0));                // one ItemsChanged
//! let rig = Rig::start(EXE, RigOptions::default());         // all of it plus the daemon
//! ```

mod bus;
mod client;
mod daemon;
pub mod limiter;
mod monitor;
mod plant_random;
mod python;
mod rig;
mod service;
mod settings;
mod stats;
mod system;
mod value;
mod worker;

use std::time::Duration;

pub use bus::PrivateBus;
pub use client::{BUSITEM, Client, items_of, request_name, value_of};
pub use daemon::{Daemon, lines_containing, wait_for};
pub use modbus_sim::Rng;
pub use monitor::{IMPOSSIBLE_POWER_W, Monitor, MonitorState, Recorder, Seen};
pub use plant_random::{SplitMix, keyed_noise};
pub use rig::{INVERTER, METER, Rig, RigOptions, ServiceSpec, grid_name, pv_name};
pub use service::FakeService;
pub use settings::{FakeSettings, SETTINGS_IFACE, SETTINGS_SERVICE, Setting, SettingValue};
pub use stats::{Gaps, gaps, percentile, rss_kib};
pub use system::{SYSTEM_SERVICE, class_and_instance, system_choosing};
pub use value::Value;
pub use worker::{Worker, scratch_path};

/// Generous: only a hung peer makes a test wait this long.
pub const TIMEOUT: Duration = Duration::from_secs(10);
