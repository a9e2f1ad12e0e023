//! Fault suite (issue 7), end to end: the real daemon, the simulated SDM230 and Growatt on a pty
//! behind a symlink, a private dbus-daemon and the settings stand-in. Each case injects a fault
//! and checks what D-Bus shows and that the daemon recovers by itself: no panic, no stale value
//! published as live, the other unit unaffected, energy counters never backwards or 0 (the
//! rig's monitor, testkit/src/monitor.rs, watches every ItemsChanged throughout). The longest gap
//! between grid /Ac/Power updates outside the outages is printed (`--nocapture`) per case.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use modbus_sim::{FaultKind, RegisterKind, SimConfig, Simulator};
use testkit::{
    FakeSettings, INVERTER, METER, Rig, RigOptions, SettingValue, TIMEOUT, Value, grid_name,
    lines_containing, pv_name, wait_for,
};

use crate::EXE;

/// Identification and registration of a unit that answers.
const ONLINE_WAIT: Duration = Duration::from_secs(20);
/// Generous bound on "a unit that stops answering disappears" (5 s loss timeout by design).
const GONE_WAIT: Duration = Duration::from_secs(8);
/// How often the meter's power changes, so every publish of the grid service carries a new
/// /Ac/Power.
const VARY_PERIOD: Duration = Duration::from_millis(40);

/// Real timing at 9600 baud: the bus is busy like on the GX, and the load stays low with
/// several rigs running in parallel.
fn realistic() -> SimConfig {
    SimConfig {
        realistic: true,
        ..SimConfig::default()
    }
}

fn start(opts: RigOptions) -> Rig {
    Rig::start(
        EXE,
        RigOptions {
            sim: realistic(),
            ..opts
        },
    )
}

fn sleep(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// A value the simulator could not have served before the outage, to see it re-read.
const FRESH_POWER: f64 = 1234.5;

/// One fault kind on one unit: three single bad replies (the service must stay), then the fault
/// for good (the service must go within the loss timeout, the other unit stay), then recovery
/// (the service returns by itself with freshly read values). `persistent` is the fault used for
/// the outage (None: the kind does not make a unit silent, see the Late case).
fn fault_case(unit: u8, kind: FaultKind, persistent: Option<FaultKind>) -> Duration {
    let label = format!("unit {unit} {kind:?}");
    let mut rig = start(RigOptions::default());
    assert!(rig.wait_online(ONLINE_WAIT), "{label}: not online");
    let (name, other) = if unit == METER {
        (grid_name(), pv_name())
    } else {
        (pv_name(), grid_name())
    };
    let vary = rig.vary_meter_power(VARY_PERIOD);
    sleep(1000);

    let start = Instant::now();
    // Far enough apart that each bad reply is an episode of its own (a failed read pauses the
    // unit 400 ms), so the gap measured is that of one fault; the simulator answers nobody
    // while it delays a slow reply.
    let spacing = match kind {
        FaultKind::Slow(d) => 1500 + d.as_millis() as u64,
        _ => 1500,
    };
    for _ in 0..3 {
        rig.sim.fault(unit, kind, false);
        sleep(spacing);
    }
    sleep(1000);
    let transient_end = Instant::now();
    assert_eq!(
        rig.monitor.releases(&name, start, transient_end),
        0,
        "{label}: single bad replies dropped the service"
    );
    let transient = rig.grid_gaps(start, transient_end);
    let (transient_gap, n) = (transient.longest, transient.updates);
    // Loose: only for the gap to mean something (a loaded machine slows every rig).
    assert!(
        n >= 3,
        "{label}: only {n} grid updates during single faults"
    );
    let mut gap = transient_gap;

    if let Some(p) = persistent {
        let off = Instant::now();
        rig.sim.fault(unit, p, true);
        assert!(
            wait_for(GONE_WAIT, || !rig.has(&name)),
            "{label}: the silent unit's service stayed"
        );
        let gone = off.elapsed();
        if unit == INVERTER {
            // The meter's rhythm while the inverter is silent matters most.
            gap = gap.max(rig.grid_gaps(off, Instant::now()).longest);
        }
        drop(vary);
        let fresh = if unit == METER {
            rig.sim.set(METER, "power", FRESH_POWER).unwrap();
            Value::Double(FRESH_POWER)
        } else {
            rig.sim.set(INVERTER, "ac_power", FRESH_POWER).unwrap();
            Value::Double(FRESH_POWER)
        };
        sleep(1000);
        assert!(rig.has(&other), "{label}: the other unit went too");
        let on = Instant::now();
        rig.sim.clear_fault(unit);
        assert!(
            wait_for(ONLINE_WAIT, || rig.has(&name)),
            "{label}: the service did not return"
        );
        let back = on.elapsed();
        assert!(
            rig.wait_value(&name, "/Ac/Power", &fresh, TIMEOUT) == fresh,
            "{label}: /Ac/Power not re-read: {:?}",
            rig.value(&name, "/Ac/Power")
        );
        // The first valid /Ac/Power after the return is a new reading, never the old one.
        let first = rig
            .monitor
            .updates(&name, "/Ac/Power", on, Instant::now())
            .into_iter()
            .map(|s| s.value)
            .find(Value::is_valid);
        assert!(
            first.is_none() || first == Some(fresh.clone()),
            "{label}: stale /Ac/Power after the return: {first:?}"
        );
        assert_eq!(
            rig.monitor.releases(&other, start, Instant::now()),
            0,
            "{label}: the other unit's service was dropped"
        );
        eprintln!("{label}: service gone {gone:?} after the fault, back {back:?} after it ended");
    } else {
        drop(vary);
        assert_eq!(rig.monitor.releases(&other, start, Instant::now()), 0);
    }
    rig.assert_healthy();
    eprintln!("{label}: longest grid /Ac/Power gap outside outages {gap:?}");
    gap
}

/// Rigs running at once across the fault-case tests: each is a daemon, a dbus-daemon and
/// simulator threads on the machine's two shared cores.
const MAX_RIGS: usize = 5;
static RIGS: Mutex<usize> = Mutex::new(0);
static RIG_FREED: Condvar = Condvar::new();

/// Holds one of the `MAX_RIGS` slots until dropped.
struct RigSlot;
impl RigSlot {
    fn take() -> RigSlot {
        let mut n = RIGS.lock().unwrap_or_else(|e| e.into_inner());
        while *n >= MAX_RIGS {
            n = RIG_FREED.wait(n).unwrap_or_else(|e| e.into_inner());
        }
        *n += 1;
        RigSlot
    }
}
impl Drop for RigSlot {
    fn drop(&mut self) {
        *RIGS.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        RIG_FREED.notify_one();
    }
}

/// Runs the cases in parallel (at most `MAX_RIGS` at once), each with its own bus, simulator
/// and daemon.
fn run_parallel(cases: Vec<(u8, FaultKind, Option<FaultKind>)>) {
    let gaps: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = cases
            .into_iter()
            .map(|(u, k, p)| {
                s.spawn(move || {
                    let _slot = RigSlot::take();
                    fault_case(u, k, p)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    eprintln!(
        "longest grid /Ac/Power gap over these cases: {:?}",
        gaps.iter().max()
    );
}

/// Every kind of bad reply from the meter. A reply arriving after the timeout (Slow) and
/// silence both end in a response timeout; the outage uses silence.
#[test]
fn meter_faults_recover_by_themselves() {
    run_parallel(vec![
        (
            METER,
            FaultKind::Slow(Duration::from_secs(1)),
            Some(FaultKind::Offline),
        ),
        (METER, FaultKind::Crc, Some(FaultKind::Crc)),
        (METER, FaultKind::Garbage, Some(FaultKind::Garbage)),
        (METER, FaultKind::Truncated, Some(FaultKind::Truncated)),
        (
            METER,
            FaultKind::Exception(4),
            Some(FaultKind::Exception(4)),
        ),
        (METER, FaultKind::WrongUnit, Some(FaultKind::WrongUnit)),
        // A reply one request late: every late frame is skipped, but a late reply to the same
        // read is indistinguishable from the current one (RTU has no transaction id), so a
        // persistent Late does not silence the unit: only single late replies are tested.
        (METER, FaultKind::Late, None),
    ]);
}

/// The same faults from the inverter: the meter's updates must go on at their rhythm.
#[test]
fn inverter_faults_leave_the_meter_alone() {
    run_parallel(vec![
        (
            INVERTER,
            FaultKind::Slow(Duration::from_secs(1)),
            Some(FaultKind::Offline),
        ),
        (INVERTER, FaultKind::Crc, Some(FaultKind::Crc)),
        (INVERTER, FaultKind::Garbage, Some(FaultKind::Garbage)),
        (INVERTER, FaultKind::Truncated, Some(FaultKind::Truncated)),
        (
            INVERTER,
            FaultKind::Exception(2),
            Some(FaultKind::Exception(2)),
        ),
        (INVERTER, FaultKind::WrongUnit, Some(FaultKind::WrongUnit)),
        (INVERTER, FaultKind::Late, None),
    ]);
}

/// The Growatt sleeps at night: silent for a long time (compressed to 15 s), then wakes. Its
/// service goes and returns with new readings and its lifetime energy unchanged; the meter is
/// published throughout; one log line per transition.
#[test]
fn inverter_asleep_all_night_returns_in_the_morning() {
    let mut rig = start(RigOptions::default());
    assert!(rig.wait_online(ONLINE_WAIT), "not online");
    let pv = pv_name();
    let mut energy_before = Value::Invalid;
    assert!(
        wait_for(ENERGY_READ, || {
            energy_before = rig.value(&pv, "/Ac/Energy/Forward");
            energy_before.is_valid()
        }),
        "no lifetime energy"
    );
    let vary = rig.vary_meter_power(VARY_PERIOD);
    sleep(1000);
    let dusk = Instant::now();
    rig.sim.set(INVERTER, "ac_power", 0.0).unwrap();
    rig.sim.fault(INVERTER, FaultKind::Offline, true);
    assert!(wait_for(GONE_WAIT, || !rig.has(&pv)), "service stayed");
    let gone = dusk.elapsed();
    sleep(15_000u64.saturating_sub(gone.as_millis() as u64));
    let requests_before = rig.sim.requests_seen();
    let dawn = Instant::now();
    rig.sim.set(INVERTER, "ac_power", 321.0).unwrap();
    rig.sim.clear_fault(INVERTER);
    assert!(wait_for(ONLINE_WAIT, || rig.has(&pv)), "no return");
    assert!(
        rig.wait_value(&pv, "/Ac/Power", &Value::Double(321.0), TIMEOUT) == Value::Double(321.0),
        "not re-read: {:?}",
        rig.value(&pv, "/Ac/Power")
    );
    let back = dawn.elapsed();
    let night = rig.grid_gaps(dusk, Instant::now());
    let (gap, n) = (night.longest, night.updates);
    drop(vary);
    assert_eq!(rig.monitor.releases(&grid_name(), dusk, Instant::now()), 0);
    assert!(n > 50, "only {n} grid updates in the night");
    // Read a few of the inverter's paced slots after its power.
    let energy = || matches!(rig.value(&pv, "/Ac/Energy/Forward"), Value::Double(_));
    wait_for(TIMEOUT, energy);
    let Value::Double(after) = rig.value(&pv, "/Ac/Energy/Forward") else {
        panic!("no energy after the night");
    };
    let Value::Double(before) = energy_before else {
        panic!("energy {energy_before:?}");
    };
    assert!(after >= before, "energy {before} -> {after}");
    rig.assert_healthy();
    let log = rig.daemon.log();
    assert_eq!(lines_containing(&log, "lost (no valid reply"), 1, "{log}");
    eprintln!(
        "night: service gone {gone:?} after dusk, back {back:?} after dawn; grid /Ac/Power \
         {n} updates, longest gap {gap:?}; bus requests in total {requests_before}"
    );
}

/// The serial port disappears (pty closed, link removed) and comes back at the same path:
/// without -x the daemon reopens it with back-off and the units return by themselves.
#[test]
fn serial_port_gone_and_back_is_reopened() {
    let mut rig = start(RigOptions::default());
    assert!(rig.wait_online(ONLINE_WAIT), "not online");
    let t0 = Instant::now();
    rig.unplug();
    assert!(
        wait_for(GONE_WAIT, || !rig.has(&grid_name()) && !rig.has(&pv_name())),
        "services stayed without a port"
    );
    assert!(
        rig.daemon.wait_log("unavailable", TIMEOUT),
        "no clear message: {}",
        rig.daemon.log()
    );
    sleep(2000);
    assert!(rig.daemon.exited().is_none(), "exited without -x");
    rig.plug();
    let plugged = Instant::now();
    assert!(rig.wait_online(ONLINE_WAIT), "the units did not return");
    rig.assert_healthy();
    let log = rig.daemon.log();
    // One message per outage, not one per reopen attempt.
    assert_eq!(lines_containing(&log, "unavailable"), 1, "{log}");
    eprintln!(
        "port: services back {:?} after the port returned ({:?} in all)",
        plugged.elapsed(),
        t0.elapsed()
    );
}

/// Under -x (the runit service) a vanished port ends the daemon with a clear message and a
/// non-zero status, so runit restarts it.
#[test]
fn serial_port_gone_under_exit_flag_exits_non_zero() {
    let mut rig = start(RigOptions {
        args: vec!["-x".into()],
        ..RigOptions::default()
    });
    assert!(rig.wait_online(ONLINE_WAIT), "not online");
    rig.unplug();
    let mut status = None;
    assert!(
        wait_for(TIMEOUT, || {
            status = rig.daemon.exited();
            status.is_some()
        }),
        "still running without its port"
    );
    let status = status.unwrap();
    let log = rig.daemon.log();
    assert!(!status.success(), "{status:?}");
    assert!(!log.contains("panicked"), "{log}");
    let path = rig.link.to_str().unwrap().to_string();
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains("serial port") && l.contains(&path)),
        "no clear message naming the port: {log}"
    );
}

/// com.victronenergy.settings is not there at start (localsettings starts late at boot): the
/// daemon waits and publishes once it appears.
#[test]
fn settings_service_absent_at_start_is_waited_for() {
    let mut rig = start(RigOptions {
        no_settings: true,
        ..RigOptions::default()
    });
    assert!(
        rig.daemon.wait_log("waiting up to", TIMEOUT),
        "{}",
        rig.daemon.log()
    );
    sleep(2000);
    assert!(rig.daemon.exited().is_none(), "gave up early");
    assert!(!rig.has(&grid_name()), "published without settings");
    rig.settings = Some(FakeSettings::start(&rig.bus.address));
    assert!(
        rig.wait_online(ONLINE_WAIT),
        "not online after settings appeared"
    );
    assert_eq!(rig.value(&grid_name(), "/DeviceInstance"), Value::Int(40));
    rig.assert_healthy();
}

/// Another process owns com.victronenergy.grid.<suffix> first (a second instance, a stale
/// driver): the daemon says so once, keeps the inverter published, and takes the name when it
/// is released.
#[test]
fn taken_bus_name_is_reported_once_and_taken_when_free() {
    let grid = grid_name();
    let mut rig = start(RigOptions {
        take_name: Some(grid.clone()),
        ..RigOptions::default()
    });
    assert!(
        rig.daemon.wait_log("already taken", ONLINE_WAIT),
        "{}",
        rig.daemon.log()
    );
    assert!(
        wait_for(ONLINE_WAIT, || rig.has(&pv_name())),
        "the inverter was not published"
    );
    // Past a retry period: still one line for the episode.
    sleep(6_000);
    let log = rig.daemon.log();
    assert_eq!(lines_containing(&log, "already taken"), 1, "{log}");
    assert!(rig.daemon.exited().is_none());
    let squatter = rig.squatter.take().unwrap();
    let squatter_name = squatter.ch.unique_name().unwrap().to_string();
    drop(squatter);
    assert!(
        rig.wait_online(ONLINE_WAIT),
        "the name was not taken once free"
    );
    let owner: String = rig
        .client
        .call(
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "GetNameOwner",
            |m| m.append1(grid.as_str()),
        )
        .unwrap()
        .read1()
        .unwrap();
    assert_ne!(owner, squatter_name);
    rig.assert_healthy();
}

/// Wrong types, out-of-range values and strings on every writable path: refused (non-zero),
/// value unchanged on D-Bus and in the settings.
#[test]
fn bad_writes_are_refused_and_change_nothing() {
    let mut rig = start(RigOptions::default());
    assert!(rig.wait_online(ONLINE_WAIT), "not online");
    let (grid, pv) = (grid_name(), pv_name());
    let text = |s: &str| Value::Text(s.into());
    let list = Value::TextList(vec!["1".into()]);
    let cases: Vec<(&str, &str, Vec<Value>)> = vec![
        (&grid, "/CustomName", vec![list.clone(), Value::Invalid]),
        (
            &grid,
            "/Role",
            vec![
                text("bogus"),
                text(""),
                text("grid "),
                Value::Int(1),
                Value::Double(0.0),
                list.clone(),
                Value::Invalid,
            ],
        ),
        (
            &pv,
            "/Position",
            vec![
                Value::Int(3),
                Value::Int(-1),
                Value::Double(1.5),
                Value::Double(f64::NAN),
                Value::Double(f64::INFINITY),
                text("abc"),
                text("1.5"),
                text(""),
                list.clone(),
                Value::Invalid,
            ],
        ),
        // Mode 1 (this limiter) owns the limit: /Ac/PowerLimit is read-only.
        (
            &pv,
            "/Ac/PowerLimit",
            vec![Value::Double(1000.0), Value::Int(0)],
        ),
    ];
    let settings_before: Vec<_> = ["CustomName", "ClassAndVrmInstance", "Position"]
        .iter()
        .flat_map(|leaf| {
            [
                format!("/Settings/Devices/eastron_21034567/{leaf}"),
                format!("/Settings/Devices/growatt_NTCXB1234A/{leaf}"),
            ]
        })
        .map(|p| {
            let v = rig.settings().get(&p);
            (p, v)
        })
        .collect();
    let check = |rig: &Rig, cases: &[(&str, &str, Vec<Value>)]| {
        for (svc, path, bad) in cases {
            let before = rig.value(svc, path);
            for v in bad {
                assert_ne!(
                    rig.client.set(svc, path, v),
                    0,
                    "{svc} {path} accepted {v:?}"
                );
                assert_eq!(
                    rig.value(svc, path),
                    before,
                    "{svc} {path} changed by {v:?}"
                );
            }
        }
    };
    check(&rig, &cases);

    // External mode: /Ac/PowerLimit becomes writable, with numbers only.
    let mode = "/Settings/DynamicGeneration/Mode";
    assert_eq!(
        rig.client
            .set("com.victronenergy.settings", mode, &Value::Int(2)),
        0
    );
    assert!(
        rig.daemon.wait_log("Mode = Int(2)", TIMEOUT),
        "{}",
        rig.daemon.log()
    );
    assert!(wait_for(TIMEOUT, || {
        rig.client.set(&pv, "/Ac/PowerLimit", &text("abc")) != 0
            && rig.client.set(&pv, "/Ac/PowerLimit", &Value::Double(500.0)) == 0
    }));
    // The applied limit (the power rate in whole percent of the rated power) settles.
    let mut last = Value::Invalid;
    assert!(wait_for(TIMEOUT, || {
        let now = rig.value(&pv, "/Ac/PowerLimit");
        let stable = now.is_valid() && now == last;
        last = now;
        if !stable {
            sleep(1000);
        }
        stable
    }));
    let limit_cases: Vec<(&str, &str, Vec<Value>)> = vec![(
        &pv,
        "/Ac/PowerLimit",
        vec![
            text("abc"),
            text("1e400"),
            Value::Double(f64::NAN),
            Value::Double(f64::INFINITY),
            Value::Double(1e12),
            list.clone(),
            Value::Invalid,
        ],
    )];
    check(&rig, &limit_cases);

    // The limiter's settings: the daemon registered them with their ranges, so localsettings
    // refuses these; the daemon sees no change.
    let limiter_log_lines = lines_containing(&rig.daemon.log(), "limiter: /Settings");
    let settings_cases: Vec<(&str, Vec<Value>)> = vec![
        (
            mode,
            vec![Value::Int(3), Value::Int(-1), text("abc"), list.clone()],
        ),
        (
            "/Settings/DynamicGeneration/derateGeneration",
            vec![Value::Int(2), Value::Int(-1), text("yes"), list.clone()],
        ),
        (
            "/Settings/DynamicGeneration/energyDifference",
            vec![
                Value::Int(-1),
                Value::Int(1_000_001),
                text("x"),
                list.clone(),
            ],
        ),
        (
            "/Settings/DynamicGeneration/ExportLimit",
            vec![Value::Int(-1), Value::Int(100_001), text(""), list.clone()],
        ),
    ];
    for (path, bad) in &settings_cases {
        let before = rig.settings().get(path);
        assert!(before.is_some(), "{path} not registered");
        for v in bad {
            assert_ne!(
                rig.client.set("com.victronenergy.settings", path, v),
                0,
                "{path} accepted {v:?}"
            );
            assert_eq!(rig.settings().get(path), before, "{path} {v:?}");
        }
    }
    assert_eq!(rig.settings().get(mode), Some(SettingValue::Int(2)));
    for (p, v) in &settings_before {
        assert_eq!(&rig.settings().get(p), v, "{p}");
    }
    sleep(500);
    assert_eq!(
        lines_containing(&rig.daemon.log(), "limiter: /Settings"),
        limiter_log_lines,
        "the daemon saw a refused setting"
    );
    assert!(rig.has(&grid) && rig.has(&pv));
    rig.assert_healthy();
}

/// Energy registers are re-read every 10 s.
const ENERGY_READ: Duration = Duration::from_secs(25);

fn f32_words(v: f32) -> [u16; 2] {
    let b = v.to_bits();
    [(b >> 16) as u16, b as u16]
}

/// Readings that a CRC-valid frame can still carry: NaN power, a power no device can have, an
/// energy counter going backwards or jumping. None reaches D-Bus; each is logged once.
#[test]
fn implausible_readings_are_not_published() {
    let mut rig = start(RigOptions::default());
    assert!(rig.wait_online(ONLINE_WAIT), "not online");
    let grid = grid_name();
    let set_power = |v: f32| {
        let [hi, lo] = f32_words(v);
        rig.sim
            .set_raw(METER, RegisterKind::Input, 0x000C, hi)
            .unwrap();
        rig.sim
            .set_raw(METER, RegisterKind::Input, 0x000D, lo)
            .unwrap();
    };
    // NaN: published invalid (fail safe), never the last good value as if live.
    set_power(f32::NAN);
    assert!(
        rig.wait_value(&grid, "/Ac/Power", &Value::Invalid, TIMEOUT) == Value::Invalid,
        "{:?}",
        rig.value(&grid, "/Ac/Power")
    );
    set_power(1500.0);
    assert!(
        rig.wait_value(&grid, "/Ac/Power", &Value::Double(1500.0), TIMEOUT)
            == Value::Double(1500.0)
    );
    // 1e30 W: outside the meter's range (the monitor flags any impossible power published).
    set_power(1e30);
    assert!(rig.wait_value(&grid, "/Ac/Power", &Value::Invalid, TIMEOUT) == Value::Invalid);
    set_power(-2500.0);
    assert!(
        rig.wait_value(&grid, "/Ac/Power", &Value::Double(-2500.0), TIMEOUT)
            == Value::Double(-2500.0)
    );

    // Counters: backwards, then (after a good reading) a jump no 100 A meter can make in the
    // elapsed time. Energies are read every 10 s: wait for the guard's verdict in the log.
    let Value::Double(import) = rig.value(&grid, "/Ac/Energy/Forward") else {
        panic!("no import energy");
    };
    let rejections = |rig: &Rig| lines_containing(&rig.daemon.log(), "rejected as implausible");
    let recoveries = |rig: &Rig| lines_containing(&rig.daemon.log(), "plausible again");
    let (r0, p0) = (rejections(&rig), recoveries(&rig));
    rig.sim.set(METER, "import_kwh", import - 10.0).unwrap();
    assert!(
        wait_for(ENERGY_READ, || rejections(&rig) > r0),
        "backwards not seen"
    );
    rig.sim.set(METER, "import_kwh", import).unwrap();
    assert!(
        wait_for(ENERGY_READ, || recoveries(&rig) > p0),
        "no recovery"
    );
    rig.sim.set(METER, "import_kwh", import + 1000.0).unwrap();
    assert!(
        wait_for(ENERGY_READ, || rejections(&rig) > r0 + 1),
        "jump not seen"
    );
    let Value::Double(shown) = rig.value(&grid, "/Ac/Energy/Forward") else {
        panic!("import energy invalid");
    };
    assert!(
        (import..import + 1.0).contains(&shown),
        "{import} -> {shown}"
    );
    let seen_max = rig
        .monitor
        .updates(
            &grid,
            "/Ac/Energy/Forward",
            Instant::now() - TIMEOUT,
            Instant::now(),
        )
        .iter()
        .filter_map(|s| match s.value {
            Value::Double(d) => Some(d),
            _ => None,
        })
        .fold(0.0, f64::max);
    assert!(
        seen_max < import + 1.0,
        "the jump reached D-Bus: {seen_max}"
    );
    rig.assert_healthy();
    let log = rig.daemon.log();
    // One warning per episode: power out of range, import backwards, import jump (NaN is
    // dropped as unreadable before the guard: published invalid, not logged).
    let warnings = lines_containing(&log, "rejected as implausible");
    assert!((3..=4).contains(&warnings), "{warnings} warnings: {log}");
    assert!(rig.has(&pv_name()));
}

/// A reply one request late from the inverter arrives while the master waits for the meter's
/// reply to a request of the same shape: it is skipped and the meter's own reply taken, so one
/// slow unit does not fail the next unit's transaction (before, both failed and the meter's
/// updates stalled for ~750 ms).
#[test]
fn a_late_reply_from_another_unit_does_not_fail_the_next_transaction() {
    use dbus_modbus_client::modbus::{ErrorKind, ReadFunction, RtuMaster, SerialSettings};
    let sim = Simulator::start(realistic()).unwrap();
    let mut m = RtuMaster::open(sim.tty_path(), SerialSettings::default()).unwrap();
    // The meter's own 60 ms silence (the simulated SDM230 ignores a request inside it).
    m.set_pacing(
        METER,
        dbus_modbus_client::modbus::UnitPacing {
            silence: Duration::from_millis(60),
            interval: Duration::ZERO,
        },
    );
    let mut words = [0u16; 2];
    sim.fault(INVERTER, FaultKind::Late, false);
    let e = m
        .read_registers(INVERTER, ReadFunction::Input, 0, &mut words)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    sim.set(METER, "voltage", 241.5).unwrap();
    m.read_registers(METER, ReadFunction::Input, 0, &mut words)
        .unwrap();
    assert_eq!(
        f32::from_bits(u32::from(words[0]) << 16 | u32::from(words[1])),
        241.5
    );
    // The skipped frame is counted as stale, not as an error of the meter.
    assert_eq!(m.stats(METER).stale_bytes, 9);
    // A reply from the wrong unit alone is still reported as such.
    sim.fault(METER, FaultKind::WrongUnit, false);
    let e = m
        .read_registers(METER, ReadFunction::Input, 0, &mut words)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WrongUnit);
}
