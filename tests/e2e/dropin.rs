//! Issue 11 end to end: the daemon as a drop-in for the Python original on a GX that already has
//! a history and an ESS. The real binary, the simulator on a pty, a private dbus-daemon and the
//! stand-ins (localsettings pre-filled as the original leaves it, batteries, systemcalc's
//! choice); a separate client checks what VRM, the GUI, systemcalc and ESS would see.

use std::collections::BTreeMap;
use std::time::Duration;

use modbus_sim::{METER_SERIAL, Plant, RegisterKind, SimConfig, SimHandle, Simulator};
use testkit::limiter::{MODE, START_WAIT, expected_percent};
use testkit::{
    Client, INVERTER, METER, Rig, RigOptions, SETTINGS_SERVICE, Setting, SettingValue, TIMEOUT,
    Value, Worker, grid_name, lines_containing, pv_name, system_choosing, wait_for,
};

use crate::EXE;

/// Identification, the G100 set-up and the first publish on a loaded machine.
const ONLINE_WAIT: Duration = Duration::from_secs(20);

fn start(opts: RigOptions) -> Rig {
    let rig = Rig::start(
        EXE,
        RigOptions {
            args: vec!["-d".into()],
            ..opts
        },
    );
    assert!(
        rig.wait_online(ONLINE_WAIT),
        "services not up; log:\n{}",
        rig.daemon.log()
    );
    rig
}

/// The settings ident of a service name: its last element (`eastron_21034567`).
fn ident_of(service: &str) -> &str {
    service.rsplit('.').next().unwrap()
}

fn setting_path(ident: &str, leaf: &str) -> String {
    format!("/Settings/Devices/{ident}/{leaf}")
}

fn text(rig: &Rig, service: &str, path: &str) -> String {
    rig.client
        .busitem(service, path, "GetText")
        .unwrap()
        .read1()
        .unwrap()
}

/// Whether `service` publishes `path` at all.
fn publishes(rig: &Rig, service: &str, path: &str) -> bool {
    rig.client
        .items(service)
        .is_some_and(|items| items.contains_key(path))
}

// ---------------------------------------------------------------------------------------------
// Settings left by the Python original

/// HR209–223 of the simulated Growatt, blanked (NULs): the original then keyed it as `pv_`,
/// while the daemon's serial comes from elsewhere.
fn blank_hr209_223(sim: &SimHandle) {
    for addr in 209..=223 {
        sim.set_raw(INVERTER, RegisterKind::Holding, addr, 0)
            .unwrap();
    }
}

/// The Growatt's ident as the original formed it: `pv_` and the text of HR209–223, the bytes
/// high first with trailing NULs stripped (docs/reference/victron.md §4), read from a simulator
/// like the rig's, independently of how the daemon identifies the unit.
fn original_pv_ident(blank: bool) -> String {
    let sim = Simulator::start(SimConfig::default()).unwrap();
    if blank {
        blank_hr209_223(&sim);
    }
    let mut bytes: Vec<u8> = (209..=223)
        .map(|addr| sim.register(INVERTER, RegisterKind::Holding, addr).unwrap())
        .flat_map(u16::to_be_bytes)
        .collect();
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
    format!("pv_{}", String::from_utf8(bytes).unwrap())
}

/// What the original leaves in localsettings for the site: both devices at instance 40,
/// named, the PV on AC-out (Position 1), the original's Enabled flags; CustomName created by
/// other means (the original never made one).
fn original_settings(meter: &str, pv: &str) -> Vec<(String, Setting)> {
    let s = |v: &str| SettingValue::Str(v.into());
    let i = SettingValue::Int;
    let enabled = || Setting::new(i(1)).with_default(i(0)).with_range(i(0), i(1));
    vec![
        (
            setting_path(meter, "ClassAndVrmInstance"),
            Setting::new(s("grid:40")).with_default(s("grid:40")),
        ),
        (setting_path(meter, "Enabled"), enabled()),
        (
            setting_path(meter, "CustomName"),
            Setting::new(s("House meter")).with_default(s("")),
        ),
        (
            setting_path(pv, "ClassAndVrmInstance"),
            Setting::new(s("pvinverter:40")).with_default(s("pvinverter:40")),
        ),
        (setting_path(pv, "Enabled"), enabled()),
        (
            setting_path(pv, "Position"),
            Setting::new(i(1)).with_default(i(0)).with_range(i(0), i(2)),
        ),
        (
            setting_path(pv, "CustomName"),
            Setting::new(s("Roof PV")).with_default(s("")),
        ),
    ]
}

/// What both services show of the site's identity.
fn assert_identity_kept(rig: &Rig) {
    let (grid, pv) = (grid_name(), pv_name());
    for (service, name) in [(&grid, "House meter"), (&pv, "Roof PV")] {
        assert_eq!(
            rig.value(service, "/DeviceInstance"),
            Value::Int(40),
            "{service}"
        );
        assert_eq!(rig.value(service, "/CustomName"), Value::from(name));
    }
    assert_eq!(rig.value(&pv, "/Position"), Value::Int(1));
    assert_eq!(text(rig, &pv, "/Position"), "AC Output");
}

/// The rig on settings as the original left them; the old idents.
fn start_after_the_original(blank: bool) -> (Rig, String, String) {
    let (meter_old, pv_old) = (format!("cg_{METER_SERIAL}"), original_pv_ident(blank));
    let rig = Rig::start_with(
        EXE,
        RigOptions {
            settings: original_settings(&meter_old, &pv_old),
            args: vec!["-d".into()],
            ..RigOptions::default()
        },
        |sim, _| {
            if blank {
                blank_hr209_223(sim);
            }
        },
    );
    assert!(
        rig.wait_online(ONLINE_WAIT),
        "services not up; log:\n{}",
        rig.daemon.log()
    );
    assert_identity_kept(&rig);
    (rig, meter_old, pv_old)
}

#[test]
fn the_originals_settings_are_adopted_once_and_a_second_start_changes_nothing() {
    let (mut rig, meter_old, pv_old) = start_after_the_original(false);
    let (grid, pv) = (grid_name(), pv_name());
    let (meter_new, pv_new) = (ident_of(&grid), ident_of(&pv));

    // The daemon's entries hold it all; nothing is left under the old idents.
    let store = rig.settings().snapshot();
    let value = |ident: &str, leaf: &str| store.get(&setting_path(ident, leaf)).map(|s| &s.value);
    let s = |v: &str| SettingValue::Str(v.into());
    assert_eq!(value(meter_new, "ClassAndVrmInstance"), Some(&s("grid:40")));
    assert_eq!(value(meter_new, "CustomName"), Some(&s("House meter")));
    assert_eq!(
        value(pv_new, "ClassAndVrmInstance"),
        Some(&s("pvinverter:40"))
    );
    assert_eq!(value(pv_new, "CustomName"), Some(&s("Roof PV")));
    assert_eq!(value(pv_new, "Position"), Some(&SettingValue::Int(1)));
    let leftovers: Vec<&String> = store
        .keys()
        .filter(|k| {
            [&meter_old, &pv_old]
                .iter()
                .any(|old| k.starts_with(&setting_path(old, "")))
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Each service appeared once, with its adopted instance: no flapping while localsettings'
    // signals about the adoption arrive.
    std::thread::sleep(Duration::from_millis(500));
    for service in [&grid, &pv] {
        let names = rig.monitor.lock().names.clone();
        let appearances = names
            .iter()
            .filter(|(_, n, up)| n == service && *up)
            .count();
        assert_eq!(appearances, 1, "{service}: {names:?}");
    }
    let log = rig.daemon.log();
    for old in [&meter_old, &pv_old] {
        assert_eq!(
            lines_containing(&log, &format!("adopting /Settings/Devices/{old} ")),
            1,
            "{log}"
        );
    }

    // A second start finds its own entries: no setting changes, not even an attribute.
    let before = rig.settings().snapshot();
    let watch = Client::connect(&rig.bus.address);
    watch.add_match(&format!(
        "type='signal',sender='{SETTINGS_SERVICE}',member='PropertiesChanged'"
    ));
    rig.restart_daemon(&["-d"]);
    assert!(rig.wait_online(ONLINE_WAIT), "{}", rig.daemon.log());
    assert!(wait_for(TIMEOUT, || rig
        .value(&pv, "/dynamicGenerationMaxPower")
        .is_valid()));
    assert_identity_kept(&rig);
    let signals = watch.signals_within("PropertiesChanged", Duration::from_millis(500));
    let changed: Vec<String> = signals
        .iter()
        .map(|m| m.path().unwrap().to_string())
        .collect();
    assert!(changed.is_empty(), "settings changed: {changed:?}");
    assert_eq!(rig.settings().snapshot(), before);
    assert_eq!(lines_containing(&rig.daemon.log(), "adopting"), 0);
}

#[test]
fn a_blank_serial_register_keyed_the_inverter_as_pv_and_is_adopted_too() {
    let (rig, _, pv_old) = start_after_the_original(true);
    assert_eq!(pv_old, "pv_");
    // The daemon's own ident does not depend on HR209–223 being filled.
    let pv = pv_name();
    assert!(ident_of(&pv).len() > "growatt_".len(), "{pv}");
    let store = rig.settings().snapshot();
    assert!(
        !store
            .keys()
            .any(|k| k.starts_with("/Settings/Devices/pv_/")),
        "{store:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// /Ac/PowerLimit

#[test]
fn power_limit_is_invalid_and_refused_unless_external_writers_own_it() {
    let rig = start(RigOptions::default());
    let pv = pv_name();
    assert!(
        wait_for(START_WAIT, || rig
            .value(&pv, "/dynamicGenerationMaxPower")
            .is_valid()),
        "no applied limit after the set-up"
    );
    let limit = || rig.value(&pv, "/Ac/PowerLimit");

    // Mode 1 (this limiter, the default) and mode 0 (off): "limiting is not supported" for
    // anyone else; the own limiter's applied limit stays on /dynamicGenerationMaxPower.
    for (mode, status) in [
        (1, "Not Configured"),
        (0, "Off, G100 only"),
        (1, "Not Configured"),
    ] {
        assert_eq!(rig.set_setting(MODE, mode), 0);
        assert_eq!(rig.wait_status(status, TIMEOUT), status);
        assert!(wait_for(TIMEOUT, || !limit().is_valid()), "mode {mode}");
        assert_eq!(text(&rig, &pv, "/Ac/PowerLimit"), "---");
        let writes = rig.hr3_writes().len();
        assert_ne!(rig.set_power_limit(1000.0), 0, "mode {mode} took a write");
        assert_eq!(limit(), Value::Invalid);
        assert_eq!(
            rig.value(&pv, "/dynamicGenerationMaxPower"),
            Value::Double(4200.0)
        );
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(rig.hr3_writes().len(), writes, "mode {mode} wrote HR3");
    }

    // Mode 2: valid (MaxPower while nobody limits), writable, honoured with 0.
    assert_eq!(rig.set_setting(MODE, 2), 0);
    assert!(
        wait_for(TIMEOUT, || limit() == Value::Double(4200.0)),
        "{:?}",
        limit()
    );
    let writes = rig.hr3_writes().len();
    assert!(wait_for(TIMEOUT, || rig.set_power_limit(2100.0) == 0));
    assert_eq!(
        rig.wait_hr3_after(writes, TIMEOUT),
        [expected_percent(2100.0)]
    );
    assert!(
        wait_for(TIMEOUT, || limit() == Value::Double(2100.0)),
        "{:?}",
        limit()
    );
    assert_eq!(text(&rig, &pv, "/Ac/PowerLimit"), "2100 W");
    // The applied limit (50 % of 4200 W) is the same on both paths.
    assert_eq!(
        rig.wait_value(
            &pv,
            "/dynamicGenerationMaxPower",
            &Value::Double(2100.0),
            TIMEOUT
        ),
        Value::Double(2100.0)
    );
    assert_eq!(limit(), Value::Double(2100.0));
}

// ---------------------------------------------------------------------------------------------
// Roles

/// Switches the meter's role through its `/Role` and waits for the rebuilt service.
fn switch_role(rig: &Rig, from: &str, to: &str) -> String {
    let serial = format!("eastron_{METER_SERIAL}");
    let (old, new) = (
        format!("com.victronenergy.{from}.{serial}"),
        format!("com.victronenergy.{to}.{serial}"),
    );
    assert_eq!(rig.client.set_value(&old, "/Role", to), 0, "{from} → {to}");
    assert!(rig.wait_service(&new, TIMEOUT), "no {new}");
    assert!(wait_for(TIMEOUT, || !rig.has(&old)), "{old} stayed");
    assert!(
        wait_for(TIMEOUT, || rig.value(&new, "/Ac/Power").is_valid()),
        "{new}: no readings"
    );
    new
}

#[test]
fn the_meter_takes_victrons_roles_with_position_exactly_where_victron_has_it() {
    let rig = start(RigOptions::default());
    let (grid, pv) = (grid_name(), pv_name());
    let meter_ident = ident_of(&grid).to_string();
    let roles = [
        "grid",
        "pvinverter",
        "genset",
        "acload",
        "evcharger",
        "heatpump",
    ];
    assert_eq!(
        rig.value(&grid, "/AllowedRoles"),
        Value::TextList(roles.map(String::from).to_vec())
    );
    assert!(!publishes(&rig, &grid, "/Position"));
    assert!(!publishes(&rig, &grid, "/IsGenericEnergyMeter"));
    assert_eq!(rig.value(&grid, "/ProductId"), Value::Int(0xB023));
    assert_eq!(text(&rig, &grid, "/ProductId"), "0xB023");

    // As a PV inverter: /Position (systemcalc skips a PV inverter without one), marked generic.
    let as_pv = switch_role(&rig, "grid", "pvinverter");
    assert_eq!(rig.value(&as_pv, "/Role"), Value::from("pvinverter"));
    assert_eq!(rig.value(&as_pv, "/Position"), Value::Int(0));
    assert_eq!(text(&rig, &as_pv, "/Position"), "AC input 1");
    assert_eq!(rig.value(&as_pv, "/IsGenericEnergyMeter"), Value::Int(1));
    // Instance 40 is free among PV inverters (the Growatt has 20): kept.
    assert_eq!(rig.value(&as_pv, "/DeviceInstance"), Value::Int(40));
    // A position set here is persisted and follows the meter into the next role.
    assert_eq!(rig.client.set_value(&as_pv, "/Position", 1), 0);
    assert_eq!(
        rig.wait_setting(
            &setting_path(&meter_ident, "Position"),
            SettingValue::Int(1)
        ),
        Some(SettingValue::Int(1))
    );

    let as_ev = switch_role(&rig, "pvinverter", "evcharger");
    assert_eq!(rig.value(&as_ev, "/Position"), Value::Int(1));
    assert_eq!(text(&rig, &as_ev, "/Position"), "AC Output");
    assert_eq!(rig.value(&as_ev, "/IsGenericEnergyMeter"), Value::Int(1));

    // No /Position for a genset, still generic.
    let as_genset = switch_role(&rig, "evcharger", "genset");
    assert!(!publishes(&rig, &as_genset, "/Position"));
    assert_eq!(
        rig.value(&as_genset, "/IsGenericEnergyMeter"),
        Value::Int(1)
    );

    // Back to grid: neither; the position stays stored for a later role.
    let back = switch_role(&rig, "genset", "grid");
    assert_eq!(back, grid);
    assert!(!publishes(&rig, &grid, "/Position"));
    assert!(!publishes(&rig, &grid, "/IsGenericEnergyMeter"));
    assert_eq!(
        rig.settings()
            .get(&setting_path(&meter_ident, "ClassAndVrmInstance")),
        Some(SettingValue::Str("grid:40".into()))
    );
    assert_eq!(
        rig.settings().get(&setting_path(&meter_ident, "Position")),
        Some(SettingValue::Int(1))
    );
    // Each switch is one disappearance and one appearance, no flapping.
    let names = rig.monitor.lock().names.clone();
    for (service, times) in [(&grid, 2), (&as_pv, 1), (&as_ev, 1), (&as_genset, 1)] {
        let up = names
            .iter()
            .filter(|(_, n, up)| n == service && *up)
            .count();
        assert_eq!(up, times, "{service}: {names:?}");
    }
    // The limiter let the meter go while it was not the grid meter, and took it back.
    let log = rig.daemon.log();
    assert_eq!(
        lines_containing(&log, "is no longer the grid meter"),
        1,
        "{log}"
    );
    assert_eq!(
        lines_containing(&log, &format!("limiter: grid meter {grid}")),
        2,
        "{log}"
    );

    // The Growatt: a PV inverter only, with a read-only /Role, a /Position, not generic.
    assert_eq!(rig.value(&pv, "/Role"), Value::from("pvinverter"));
    assert_ne!(rig.client.set_value(&pv, "/Role", "pvinverter"), 0);
    assert!(!publishes(&rig, &pv, "/AllowedRoles"));
    assert!(!publishes(&rig, &pv, "/IsGenericEnergyMeter"));
    assert_eq!(rig.value(&pv, "/Position"), Value::Int(0));
    assert_eq!(rig.value(&pv, "/ProductId"), Value::Int(0xB089));
    assert_eq!(text(&rig, &pv, "/StatusCode"), "Running");
}

// ---------------------------------------------------------------------------------------------
// The battery the system uses

const FIRST: &str = "com.victronenergy.battery.aaa_shunt";
const SECOND: &str = "com.victronenergy.battery.bbb_bms";

#[test]
fn the_limiter_reads_the_battery_the_system_chose() {
    // Alphabetically first: a battery charging at half charge, which would hold the limit at
    // full power (rule 4, "charging"). The system uses the second, discharging and nearly full.
    let first = vec![
        ("/Dc/0/Power", Value::Double(800.0)),
        ("/Dc/0/Voltage", Value::Double(52.0)),
        ("/Soc", Value::Double(50.0)),
        ("/DeviceInstance", Value::Int(512)),
    ];
    let second = vec![
        ("/Dc/0/Power", Value::Double(-500.0)),
        ("/Dc/0/Voltage", Value::Double(53.0)),
        ("/Soc", Value::Double(95.0)),
        ("/DeviceInstance", Value::Int(513)),
        ("/Info/MaxChargeVoltage", Value::Double(55.2)),
    ];
    let vebus = vec![
        ("/Ac/ActiveIn/P", Value::Double(0.0)),
        ("/State", Value::Int(9)),
        ("/Leds/Bulk", Value::Int(0)),
        ("/Leds/Absorption", Value::Int(0)),
        ("/DeviceInstance", Value::Int(276)),
    ];
    let system = system_choosing(Some((SECOND, 513)));
    let rig = Rig::start_limiter_with(
        EXE,
        Plant {
            load_w: 500.0,
            pv_available_w: 3500.0,
            ramp_w_per_s: 1000.0,
        },
        &[],
        vec![
            (FIRST.to_string(), first),
            (SECOND.to_string(), second),
            ("com.victronenergy.vebus.test".to_string(), vebus),
            system.clone(),
        ],
    );
    assert!(wait_for(START_WAIT, || rig
        .sim
        .get(INVERTER, "ac_power")
        .is_ok_and(|w| w >= 3499.0)));
    let before = rig.hr3_writes().len();
    rig.enable_limiter();
    assert_eq!(
        rig.wait_status("Configured, limiting", START_WAIT),
        "Configured, limiting",
        "log:\n{}",
        rig.daemon.log()
    );
    assert_eq!(
        rig.wait_hr3_after(before, START_WAIT).first().copied(),
        Some(expected_percent(500.0))
    );
    let log = rig.daemon.log();
    assert_eq!(
        lines_containing(&log, &format!("battery readings from {SECOND}")),
        1,
        "{log}"
    );
    // Never the first, not even while the system's values were being read at start.
    assert_eq!(
        lines_containing(&log, &format!("battery readings from {FIRST}")),
        0,
        "{log}"
    );

    // The system switches to the first: its charging battery now holds the limit at full power.
    rig.service(&system.0).set(
        "/ActiveBatteryService",
        Value::from("com.victronenergy.battery/512"),
    );
    assert_eq!(
        rig.wait_status("Configured, charging", START_WAIT),
        "Configured, charging"
    );
    assert!(
        rig.daemon
            .log()
            .contains(&format!("battery readings from {FIRST}"))
    );
}

// ---------------------------------------------------------------------------------------------
// /RefreshTime

/// The median of the intervals between consecutive updates.
fn median_interval(times: &[std::time::Instant]) -> Duration {
    let mut gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort();
    gaps[gaps.len() / 2]
}

#[test]
fn refresh_time_is_the_interval_at_which_power_is_published() {
    // The bus at 9600 baud with real transaction times, as a GX has it.
    let rig = start(RigOptions {
        sim: SimConfig {
            realistic: true,
            ..SimConfig::default()
        },
        ..RigOptions::default()
    });
    // New powers much faster than anything is published, so every publish carries a change.
    let sim = rig.sim.clone();
    let _vary = Worker::spawn(move |stop| {
        let mut i = 0u32;
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let step = f64::from(i % 200);
            let _ = sim.set(METER, "power", -1000.0 - step);
            let _ = sim.set(INVERTER, "ac_power", 2000.0 + step);
            i = i.wrapping_add(1);
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    std::thread::sleep(Duration::from_secs(4));
    let mut measured = BTreeMap::new();
    // The meter at the publish interval; the inverter, which the limiter does not limit here,
    // every few seconds (its AC power is read by need: src/app/port.rs `FastPace`).
    for (service, samples) in [(grid_name(), 10), (pv_name(), 5)] {
        wait_for(Duration::from_secs(30), || {
            rig.monitor.times(&service, "/Ac/Power").len() > samples
        });
        let times = rig.monitor.times(&service, "/Ac/Power");
        assert!(times.len() > samples, "{service}: {} updates", times.len());
        let interval = median_interval(&times[times.len() - samples..]);
        let Value::Int(refresh) = rig.value(&service, "/RefreshTime") else {
            panic!("{service}: no /RefreshTime");
        };
        let refresh = Duration::from_millis(refresh as u64);
        eprintln!("{service}: /RefreshTime {refresh:?}, /Ac/Power every {interval:?} (median)");
        assert!(
            interval.abs_diff(refresh) <= refresh / 5,
            "{service}: /RefreshTime {refresh:?}, measured {interval:?}"
        );
        measured.insert(service, interval);
    }
    assert_eq!(measured.len(), 2);
}
