//! How often the grid meter's /Ac/Power reaches D-Bus, with the real daemon and the simulator's
//! realistic timing at 9600 baud, and the longest gap while the Growatt is silent.
//!
//! `cargo bench --bench grid_update_rate` (60 s silent inverter); under
//! `cargo test --all-targets`: a smoke pass (5 s silent). `--offline-secs N` overrides.
//!
//! /Ac/Power is sent only when it changed and at most every --publish-interval (200 ms), so a
//! thread changes the simulated meter's power every 5 ms: every publish carries a change. The
//! meter's read rate is seen through D-Bus by a second run with `--publish-interval 1`.

use std::time::{Duration, Instant};

use modbus_sim::{FaultKind, SimConfig};
use testkit::{INVERTER, Rig, RigOptions, pv_name, rss_kib, wait_for};

const EXE: &str = env!("CARGO_BIN_EXE_dbus-modbus-client");
const WAIT: Duration = Duration::from_secs(30);

/// Waits until both services publish readings.
fn wait_ready(rig: &Rig) {
    assert!(
        rig.wait_online(WAIT),
        "services not up:\n{}",
        rig.daemon.log()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let offline = args
        .iter()
        .position(|a| a == "--offline-secs")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(if full { 60 } else { 5 }));
    let steady = Duration::from_secs(if full { 20 } else { 2 });

    let sim = SimConfig {
        realistic: true,
        ..SimConfig::default()
    };
    println!(
        "grid_update_rate: simulator realistic at {} baud, turnaround {:?}; \
         meter power changed every 5 ms",
        sim.serial.baud, sim.turnaround
    );
    let mut rig = Rig::start(
        EXE,
        RigOptions {
            sim,
            ..RigOptions::default()
        },
    );
    let _vary = rig.vary_meter_power(Duration::from_millis(5));
    run(&mut rig, steady, offline, full);
}

/// Prints one line of figures for the window `[from, to]`.
fn report(what: &str, rig: &Rig, from: (Instant, u64), to: (Instant, u64)) {
    let w = rig.grid_gaps(from.0, to.0);
    let tx = (to.1 - from.1) as f64 / (to.0 - from.0).as_secs_f64();
    println!(
        "{what} ({:.0} s): /Ac/Power {} updates, {:.2}/s, longest gap {:.0?}; \
         bus {tx:.1} transactions/s (all units)",
        w.window.as_secs_f64(),
        w.updates,
        w.per_second(),
        w.longest
    );
}

fn run(rig: &mut Rig, steady: Duration, offline: Duration, full: bool) {
    let pv = pv_name();
    let sim = rig.sim.clone();
    let mark = || (Instant::now(), sim.requests_seen());
    wait_ready(rig);
    // Past the first reads of every register.
    std::thread::sleep(Duration::from_secs(2));
    let start = mark();
    std::thread::sleep(steady);
    report("both online", rig, start, mark());

    let rss_before = rss_kib(rig.daemon.pid());
    let off = mark();
    sim.fault(INVERTER, FaultKind::Offline, true);
    let removed =
        wait_for(offline.max(Duration::from_secs(7)), || !rig.has(&pv)).then(|| off.0.elapsed());
    std::thread::sleep((off.0 + offline).saturating_duration_since(Instant::now()));
    let on = mark();
    sim.clear_fault(INVERTER);
    let back = wait_for(WAIT, || rig.has(&pv)).then(|| on.0.elapsed());
    report("Growatt silent", rig, off, on);
    let secs =
        |d: Option<Duration>| d.map_or("never".into(), |d| format!("{:.2} s", d.as_secs_f64()));
    println!(
        "pvinverter service removed {} after the Growatt fell silent, back {} after it \
         answered again; daemon VmRSS {rss_before} KiB before, {} KiB after",
        secs(removed),
        secs(back),
        rss_kib(rig.daemon.pid())
    );

    // The meter's power read rate, seen through D-Bus when every change is published.
    rig.restart_daemon(&["--publish-interval", "1"]);
    wait_ready(rig);
    std::thread::sleep(Duration::from_secs(2));
    let start = mark();
    std::thread::sleep(if full { steady } else { Duration::from_secs(1) });
    report(
        "--publish-interval 1, /Ac/Power updates/s = meter power reads/s",
        rig,
        start,
        mark(),
    );
    rig.daemon.stop();
}
