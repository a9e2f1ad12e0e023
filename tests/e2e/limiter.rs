//! Issue 5 end to end: the real daemon drives the simulated Growatt in closed loop with the
//! simulator's plant model (house load, PV, an inverter that ramps towards its HR3 limit),
//! over a pty at 9600 baud with realistic timing, a private dbus-daemon, the settings stand-in
//! and battery + vebus stand-ins. Assertions are on the HR3 writes the simulator logged and on
//! what the PV inverter's service shows.

use std::time::Duration;

use dbus::arg::{PropMap, Variant};
use modbus_sim::{FaultKind, Plant};
use testkit::limiter::{BATTERY, DERATE_GENERATION, ENERGY_DIFFERENCE, MODE, expected_percent};
use testkit::{Client, INVERTER, METER, Rig, SETTINGS_SERVICE, Value, pv_name, wait_for};

use crate::EXE;

/// Generous: how long a write or status change may take on a loaded machine.
pub(crate) const WAIT: Duration = Duration::from_secs(15);
/// The plant's inverter ramps at 1000 W/s: long enough for the biggest step here to settle.
const SETTLE: Duration = Duration::from_secs(4);
/// The battery discharges and the MultiPlus draws 200 W from its AC input: the demand is the
/// house load minus that (testkit/README.md), which proves the D-Bus inputs reach the decision.
pub(crate) const MULTI_IN_W: f64 = 200.0;

pub(crate) fn battery_discharging() -> Vec<(&'static str, Value)> {
    vec![
        ("/Dc/0/Power", Value::Double(-500.0)),
        ("/Dc/0/Voltage", Value::Double(53.0)),
        ("/Soc", Value::Double(95.0)),
        ("/DeviceInstance", Value::Int(512)),
    ]
}

pub(crate) fn vebus_inverting() -> Vec<(&'static str, Value)> {
    vec![
        ("/Ac/ActiveIn/P", Value::Double(MULTI_IN_W)),
        ("/State", Value::Int(9)),
        ("/Leds/Bulk", Value::Int(0)),
        ("/Leds/Absorption", Value::Int(0)),
        ("/DeviceInstance", Value::Int(276)),
    ]
}

pub(crate) fn plant(load_w: f64) -> Plant {
    Plant {
        load_w,
        pv_available_w: 3500.0,
        ramp_w_per_s: 1000.0,
    }
}

fn start(daemon_args: &[&str]) -> Rig {
    Rig::start_limiter(
        EXE,
        plant(500.0),
        daemon_args,
        &battery_discharging(),
        &vebus_inverting(),
    )
}

/// Enables the limiter and waits for its first limit (500 W load less the MultiPlus' draw).
pub(crate) fn enable_and_wait_first_limit(rig: &Rig) -> usize {
    // The simulated inverter starts at 0 W: let it reach the available PV first.
    assert!(wait_for(WAIT, || rig
        .sim
        .get(INVERTER, "ac_power")
        .is_ok_and(|w| w >= 3499.0)));
    // ... and the daemon to read it there a few times.
    std::thread::sleep(Duration::from_secs(1));
    let before = rig.hr3_writes().len();
    rig.enable_limiter();
    assert_eq!(
        rig.wait_status("Configured, limiting", WAIT),
        "Configured, limiting"
    );
    let first = rig.wait_hr3_after(before, WAIT);
    assert_eq!(
        first.first().copied(),
        Some(expected_percent(500.0 - MULTI_IN_W)),
        "log:\n{}",
        rig.daemon.log()
    );
    // The inverter ramps down from full power: no further write may be needed meanwhile.
    std::thread::sleep(SETTLE);
    assert_eq!(
        rig.hr3_since(before).len(),
        1,
        "{:?}",
        rig.hr3_since(before)
    );
    rig.hr3_writes().len()
}

/// Applies a load step and returns the HR3 writes it caused once the plant settled.
fn load_step(rig: &Rig, load_w: f64) -> Vec<u16> {
    let before = rig.hr3_writes().len();
    rig.set_load(load_w);
    let first = rig.wait_hr3_after(before, WAIT);
    assert!(!first.is_empty(), "no write after a step to {load_w} W");
    std::thread::sleep(SETTLE);
    rig.hr3_since(before)
}

fn as_f64(v: &Value) -> f64 {
    match v {
        Value::Double(d) => *d,
        Value::Int(i) => f64::from(*i),
        other => panic!("not a number: {other:?}"),
    }
}

#[test]
fn load_steps_write_hr3_once_and_sigterm_restores_full_power_once() {
    let mut rig = start(&["--power-limit-timeout", "3", "--stale-grid", "1"]);
    assert_eq!(rig.status(), "Not Configured");
    // HR3 reads 255 (not limited) after the set-up: 100 %, so nothing is written.
    assert_eq!(rig.hr3_since(0), []);
    enable_and_wait_first_limit(&rig);

    for load in [2500.0, 1200.0, 3000.0] {
        let want = expected_percent(load - MULTI_IN_W);
        let writes = load_step(&rig, load);
        assert!(
            (1..=2).contains(&writes.len()) && writes.last() == Some(&want),
            "step to {load} W: wanted {want} % in at most 2 writes, got {writes:?}"
        );
    }
    let applied = 42.0 * f64::from(expected_percent(3000.0 - MULTI_IN_W));
    let demand = as_f64(&rig.value(&pv_name(), "/dynamicGenerationPower"));
    assert!(
        (demand - (3000.0 - MULTI_IN_W)).abs() < 10.0,
        "demand {demand}"
    );
    assert_eq!(
        as_f64(&rig.value(&pv_name(), "/dynamicGenerationMaxPower")),
        applied
    );
    // Not the owner of /Ac/PowerLimit in limiter mode: invalid ("not supported" for others)
    // and refused; the applied limit is on /dynamicGenerationMaxPower.
    assert_ne!(rig.set_power_limit(1000.0), 0);
    assert_eq!(rig.value(&pv_name(), "/Ac/PowerLimit"), Value::Invalid);
    let limiter_writes = rig.hr3_writes().len();
    assert_eq!(
        rig.value(&pv_name(), "/Internal/LimitWrites"),
        Value::Int(limiter_writes as i32)
    );

    let before = rig.hr3_writes().len();
    let status = rig.daemon.stop();
    assert!(status.success(), "{status:?}");
    assert_eq!(rig.hr3_since(before), [100], "log:\n{}", rig.daemon.log());
}

#[test]
fn stale_meter_drives_the_failsafe_rate_once_and_disabling_restores_full_power_once() {
    let rig = start(&["--stale-grid", "1"]);
    let before = enable_and_wait_first_limit(&rig);
    rig.sim.fault(METER, FaultKind::Offline, true);
    assert_eq!(
        rig.wait_status("Meter reading stale, G100 fail-safe rate", WAIT),
        "Meter reading stale, G100 fail-safe rate"
    );
    // 3680 W of 4200 W = 87.6 %, rounded down so it never exceeds the export limit.
    assert_eq!(rig.wait_hr3_after(before, WAIT), [87]);
    // After 5 s without an answer the meter is lost: a new status, no new write.
    assert_eq!(
        rig.wait_status("Meter offline, G100 fail-safe rate", WAIT),
        "Meter offline, G100 fail-safe rate"
    );
    assert_eq!(rig.hr3_since(before), [87]);

    assert_eq!(rig.set_setting(DERATE_GENERATION, 0i32), 0);
    assert_eq!(
        rig.wait_status("Configured, G100", WAIT),
        "Configured, G100"
    );
    assert_eq!(rig.wait_hr3_after(before + 1, WAIT), [100]);
    // The meter coming back changes nothing while disabled.
    rig.sim.clear_fault(METER);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(rig.hr3_since(before), [87, 100]);
    assert_eq!(rig.status(), "Configured, G100");
}

#[test]
fn external_mode_power_limit_reaches_hr3_clamped_and_reverts_after_the_keep_alive() {
    let rig = start(&["--power-limit-timeout", "3"]);
    assert_eq!(rig.set_setting(MODE, 2i32), 0);
    assert_eq!(
        rig.wait_status("External control, limit expired: full power", WAIT),
        "External control, limit expired: full power"
    );
    let before = rig.hr3_writes().len();

    assert_eq!(rig.set_power_limit(2100.0), 0);
    assert_eq!(rig.wait_hr3_after(before, WAIT), [50]);
    assert_eq!(
        rig.wait_status("External control (/Ac/PowerLimit)", WAIT),
        "External control (/Ac/PowerLimit)"
    );
    assert!(wait_for(WAIT, || rig.value(&pv_name(), "/Ac/PowerLimit")
        == Value::Double(2100.0)));
    // Above MaxPower: clamped to 100 %.
    assert_eq!(rig.set_power_limit(99_999.0), 0);
    assert_eq!(rig.wait_hr3_after(before + 1, WAIT), [100]);
    // Below zero: clamped to 0 W, which the inverter gets as its 2 % floor.
    assert_eq!(rig.set_power_limit(-500.0), 0);
    assert_eq!(rig.wait_hr3_after(before + 2, WAIT), [2]);
    // A keep-alive of the same value writes nothing and restarts the timeout.
    std::thread::sleep(Duration::from_millis(1500));
    let keep_alive = std::time::SystemTime::now();
    assert_eq!(rig.set_power_limit(-500.0), 0);
    assert_eq!(rig.wait_hr3_after(before + 3, WAIT), [100]);
    let reverted = rig.hr3_writes().last().unwrap().at;
    let after_keep_alive = reverted.duration_since(keep_alive).unwrap_or_default();
    assert!(
        after_keep_alive >= Duration::from_millis(2900),
        "reverted {after_keep_alive:?} after the last keep-alive"
    );
    assert_eq!(
        rig.wait_status("External control, limit expired: full power", WAIT),
        "External control, limit expired: full power"
    );

    // Back in limiter mode /Ac/PowerLimit refuses writes again.
    assert_eq!(rig.set_setting(MODE, 1i32), 0);
    assert_eq!(rig.wait_status("Not Configured", WAIT), "Not Configured");
    assert!(wait_for(WAIT, || rig.set_power_limit(1000.0) != 0));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(rig.hr3_since(before), [50, 100, 2, 100]);
}

/// Adds a setting again without a range, as an older version or another tool may do:
/// localsettings keeps its value but takes the new attributes, so it then accepts any integer
/// and the daemon must refuse bad ones itself. (Created without a range before the daemon
/// starts, the daemon's own AddSettings would give it the daemon's range.)
fn add_unranged_setting(client: &Client, path: &str, default: i32) {
    let mut entry = PropMap::new();
    entry.insert("path".into(), Variant(Box::new(path.to_string())));
    entry.insert("default".into(), Variant(Box::new(default)));
    client
        .call(
            SETTINGS_SERVICE,
            "/",
            "com.victronenergy.Settings",
            "AddSettings",
            |m| m.append1(vec![entry]),
        )
        .unwrap();
}

#[test]
fn bad_settings_are_refused_and_statuses_follow_the_rules() {
    let rig = start(&[]);
    let before = enable_and_wait_first_limit(&rig);
    add_unranged_setting(&rig.client, ENERGY_DIFFERENCE, 0);
    add_unranged_setting(&rig.client, MODE, 1);

    // Refused by the settings service (range 0..1 and the type the daemon created).
    assert_ne!(rig.set_setting(DERATE_GENERATION, 2i32), 0);
    assert_ne!(rig.set_setting(DERATE_GENERATION, -1i32), 0);
    assert_ne!(rig.set_setting(DERATE_GENERATION, "on"), 0);
    // Stored by the settings service (no range there), refused by the daemon.
    assert_eq!(rig.set_setting(ENERGY_DIFFERENCE, -5i32), 0);
    assert_eq!(rig.set_setting(ENERGY_DIFFERENCE, 2_000_000i32), 0);
    assert_eq!(rig.set_setting(MODE, 3i32), 0);
    assert_eq!(rig.set_setting(MODE, -1i32), 0);
    assert!(wait_for(WAIT, || rig
        .daemon
        .log()
        .matches("ignoring")
        .count()
        >= 4));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(rig.hr3_since(before), Vec::<u16>::new());
    assert_eq!(rig.status(), "Configured, limiting");

    // Valid values are applied: each status text of the limiter.
    assert_eq!(rig.set_setting(ENERGY_DIFFERENCE, 900i32), 0); // offset ≈ +13 kWh
    assert_eq!(
        rig.wait_status("Configured, not limiting", WAIT),
        "Configured, not limiting"
    );
    assert_eq!(rig.wait_hr3_after(before, WAIT), [100]);
    assert_eq!(rig.set_setting(ENERGY_DIFFERENCE, 2000i32), 0); // offset ≈ −1087 kWh
    assert_eq!(
        rig.wait_status("Configured, out of range", WAIT),
        "Configured, out of range"
    );
    assert_eq!(rig.set_setting(ENERGY_DIFFERENCE, 950i32), 0);
    assert_eq!(
        rig.wait_status("Configured, limiting", WAIT),
        "Configured, limiting"
    );
    rig.service(BATTERY)
        .set("/Dc/0/Power", Value::Double(800.0));
    rig.service(BATTERY).set("/Soc", Value::Double(50.0));
    assert_eq!(
        rig.wait_status("Configured, charging", WAIT),
        "Configured, charging"
    );
    rig.sim.set_plant(Some(Plant {
        pv_available_w: 0.0,
        ..plant(500.0)
    }));
    assert_eq!(rig.wait_status("PV offline", WAIT), "PV offline");
    assert_eq!(rig.set_setting(DERATE_GENERATION, 0i32), 0);
    assert_eq!(
        rig.wait_status("Configured, G100", WAIT),
        "Configured, G100"
    );
    assert_eq!(rig.set_setting(ENERGY_DIFFERENCE, 0i32), 0);
    assert_eq!(rig.wait_status("Not Configured", WAIT), "Not Configured");
    assert_eq!(rig.set_setting(MODE, 0i32), 0);
    assert_eq!(rig.wait_status("Off, G100 only", WAIT), "Off, G100 only");
}
