//! How often the grid meter's /Ac/Power reaches D-Bus, with the real daemon and the simulator's
//! realistic timing at 9600 baud, and the longest gap while the Growatt is silent.
//!
//! `cargo bench --bench grid_update_rate` (60 s silent inverter); under
//! `cargo test --all-targets`: a smoke pass (5 s silent). `--offline-secs N` overrides.
//!
//! /Ac/Power is sent only when it changed and at most every --publish-interval (200 ms), so a
//! thread changes the simulated meter's power every 5 ms: every publish carries a change. The
//! meter's read rate is seen through D-Bus by a second run with `--publish-interval 1`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dbus_modbus_client::modbus::SerialSettings;
use dbus_modbus_client::sim::{
    FaultKind, GROWATT_SERIAL, METER_SERIAL, SimConfig, SimHandle, Simulator,
};
use support::{Client, Daemon, FakeSettings, PrivateBus, Recorder, record_item_updates, wait_for};

const EXE: &str = env!("CARGO_BIN_EXE_dbus-modbus-client");
const METER: u8 = 2;
const INVERTER: u8 = 1;
const WAIT: Duration = Duration::from_secs(30);

fn grid_name() -> String {
    format!("com.victronenergy.grid.eastron_{METER_SERIAL}")
}
fn pv_name() -> String {
    format!("com.victronenergy.pvinverter.growatt_{GROWATT_SERIAL}")
}

/// Arrival times of the grid service's ItemsChanged signals carrying /Ac/Power.
fn record_grid_power(address: &str) -> (Recorder, Arc<Mutex<Vec<Instant>>>) {
    record_item_updates(address, &grid_name(), "/Ac/Power")
}

/// Update count, rate and longest gap of the signals inside `[from, to]`.
struct Window {
    updates: usize,
    per_s: f64,
    longest_gap: Duration,
    secs: f64,
}

fn window(seen: &Mutex<Vec<Instant>>, from: Instant, to: Instant) -> Window {
    let seen = seen.lock().map(|v| v.clone()).unwrap_or_default();
    let times: Vec<Instant> = seen
        .into_iter()
        .filter(|t| *t >= from && *t <= to)
        .collect();
    let secs = (to - from).as_secs_f64();
    Window {
        updates: times.len(),
        per_s: times.len() as f64 / secs,
        longest_gap: times
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default(),
        secs,
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// A fresh daemon on the simulator; waits until both services publish readings.
fn start_daemon(sim: &SimHandle, bus: &PrivateBus, client: &Client, extra: &[&str]) -> Daemon {
    let mut args = vec!["-s", sim.tty_path(), "--dbus", &bus.address, "-r", "9600"];
    args.extend_from_slice(extra);
    let daemon = Daemon::start(EXE, &args);
    let (grid, pv) = (grid_name(), pv_name());
    let ready = wait_for(WAIT, || {
        client.name_has_owner(&grid)
            && client.name_has_owner(&pv)
            && client
                .value(&grid, "/Ac/Power")
                .is_some_and(|v| v.is_valid())
            && client.value(&pv, "/Ac/Power").is_some_and(|v| v.is_valid())
    });
    assert!(ready, "services not up:\n{}", daemon.log());
    daemon
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

    let bus = PrivateBus::start();
    let _settings = FakeSettings::start(&bus.address);
    let serial = SerialSettings::default();
    let sim = Simulator::start(SimConfig {
        serial,
        realistic: true,
        ..SimConfig::default()
    })
    .expect("simulator");
    let client = Client::connect(&bus.address);
    println!(
        "grid_update_rate: simulator realistic at {} baud, turnaround {:?}; \
         meter power changed every 5 ms",
        serial.baud,
        SimConfig::default().turnaround
    );

    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0u32;
            while !stop.load(Ordering::SeqCst) {
                let _ = sim.set(METER, "power", -1000.0 - f64::from(i % 1000));
                i = i.wrapping_add(1);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        run(&sim, &bus, &client, steady, offline, full);
        stop.store(true, Ordering::SeqCst);
    });
}

/// Prints one line of figures for the window `[from, to]`.
fn report(what: &str, seen: &Mutex<Vec<Instant>>, from: (Instant, u64), to: (Instant, u64)) {
    let w = window(seen, from.0, to.0);
    let tx = (to.1 - from.1) as f64 / (to.0 - from.0).as_secs_f64();
    println!(
        "{what} ({:.0} s): /Ac/Power {} updates, {:.2}/s, longest gap {:.0?}; \
         bus {tx:.1} transactions/s (all units)",
        w.secs, w.updates, w.per_s, w.longest_gap
    );
}

fn run(
    sim: &SimHandle,
    bus: &PrivateBus,
    client: &Client,
    steady: Duration,
    offline: Duration,
    full: bool,
) {
    let pv = pv_name();
    let mark = || (Instant::now(), sim.requests_seen());
    let mut daemon = start_daemon(sim, bus, client, &[]);
    let (recorder, seen) = record_grid_power(&bus.address);
    // Past the first reads of every register.
    std::thread::sleep(Duration::from_secs(2));
    let start = mark();
    std::thread::sleep(steady);
    report("both online", &seen, start, mark());

    let rss_before = rss_kib(daemon.pid());
    let off = mark();
    sim.fault(INVERTER, FaultKind::Offline, true);
    let removed = wait_for(offline.max(Duration::from_secs(7)), || {
        !client.name_has_owner(&pv)
    })
    .then(|| off.0.elapsed());
    std::thread::sleep((off.0 + offline).saturating_duration_since(Instant::now()));
    let on = mark();
    sim.clear_fault(INVERTER);
    let back = wait_for(WAIT, || client.name_has_owner(&pv)).then(|| on.0.elapsed());
    report("Growatt silent", &seen, off, on);
    let secs =
        |d: Option<Duration>| d.map_or("never".into(), |d| format!("{:.2} s", d.as_secs_f64()));
    println!(
        "pvinverter service removed {} after the Growatt fell silent, back {} after it \
         answered again; daemon VmRSS {rss_before} KiB before, {} KiB after",
        secs(removed),
        secs(back),
        rss_kib(daemon.pid())
    );
    drop(recorder);
    daemon.stop();

    // The meter's power read rate, seen through D-Bus when every change is published.
    let mut daemon = start_daemon(sim, bus, client, &["--publish-interval", "1"]);
    let (recorder, seen) = record_grid_power(&bus.address);
    std::thread::sleep(Duration::from_secs(2));
    let start = mark();
    std::thread::sleep(if full { steady } else { Duration::from_secs(1) });
    report(
        "--publish-interval 1, /Ac/Power updates/s = meter power reads/s",
        &seen,
        start,
        mark(),
    );
    drop(recorder);
    daemon.stop();
}
