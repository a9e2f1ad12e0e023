//! Meter step -> HR3 write latency and writes per step, in closed loop: the real daemon, the
//! simulator with realistic 9600 baud timing and its plant model (inverter ramping at
//! 1000 W/s), a private dbus-daemon, the settings stand-in and battery + vebus stand-ins.
//!
//! `cargo bench --bench limiter_latency`: 40 load steps alternating up and down with random
//! sizes (400-2000 W), 11 s apart (longer than the actuator's 10 s reversal window, so every
//! step is judged on its own). Without `--bench` (under `cargo test --all-targets`): 2 steps.
//! Latency is from the moment the step is applied to the simulator's plant to the first HR3
//! write the simulator logs after it; writes per step count every HR3 write until the next step.
//! `LIMITER_LATENCY_DAEMON_ARGS="--max-transaction 40"` passes extra options to the daemon.

use std::time::{Duration, SystemTime};

use modbus_sim::Plant;
use testkit::{INVERTER, Rig, Rng, Value, percentile, wait_for};

const EXE: &str = env!("CARGO_BIN_EXE_dbus-modbus-client");
const WAIT: Duration = Duration::from_secs(15);

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (steps, pause) = if full {
        (40, Duration::from_secs(11))
    } else {
        (2, Duration::from_secs(4))
    };
    let extra = std::env::var("LIMITER_LATENCY_DAEMON_ARGS").unwrap_or_default();
    let daemon_args: Vec<&str> = extra.split_whitespace().collect();
    let rig = Rig::start_limiter(
        EXE,
        Plant {
            load_w: 1500.0,
            pv_available_w: 3800.0,
            ramp_w_per_s: 1000.0,
        },
        &daemon_args,
        &[
            ("/Dc/0/Power", Value::Double(0.0)),
            ("/Dc/0/Voltage", Value::Double(53.0)),
            ("/Soc", Value::Double(95.0)),
        ],
        &[
            ("/Ac/ActiveIn/P", Value::Double(0.0)),
            ("/State", Value::Int(9)),
            ("/Leds/Bulk", Value::Int(0)),
            ("/Leds/Absorption", Value::Int(0)),
        ],
    );
    assert!(wait_for(WAIT, || rig
        .sim
        .get(INVERTER, "ac_power")
        .is_ok_and(|w| w >= 3799.0)));
    std::thread::sleep(Duration::from_secs(1));
    let before = rig.hr3_writes().len();
    rig.enable_limiter();
    assert!(
        wait_for(WAIT, || rig.hr3_writes().len() > before),
        "no first limit; log:\n{}",
        rig.daemon.log()
    );
    std::thread::sleep(pause);

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut load = 1500.0;
    let mut applied: Vec<SystemTime> = Vec::new();
    for i in 0..steps {
        let size = 400.0 + rng.below(1601) as f64;
        load = if i % 2 == 0 {
            (load + size).min(3600.0)
        } else {
            (load - size).max(300.0)
        };
        rig.set_load(load);
        applied.push(SystemTime::now());
        std::thread::sleep(pause);
    }
    let writes = rig.hr3_writes();
    let mut latencies_ms: Vec<f64> = Vec::new();
    let mut per_step = Vec::new();
    let mut missed = 0;
    for (i, &at) in applied.iter().enumerate() {
        let end = applied.get(i + 1).copied();
        let of_step: Vec<_> = writes
            .iter()
            .filter(|w| w.at >= at && end.is_none_or(|e| w.at < e))
            .collect();
        per_step.push(of_step.len() as f64);
        match of_step.first() {
            Some(w) => latencies_ms
                .push(w.at.duration_since(at).unwrap_or_default().as_secs_f64() * 1000.0),
            None => missed += 1,
        }
    }
    latencies_ms.sort_by(f64::total_cmp);
    per_step.sort_by(f64::total_cmp);
    let pct = |v: &[f64], p: f64| percentile(v, p).unwrap_or(f64::NAN);
    println!(
        "limiter_latency ({}): {} load steps, 9600 baud realistic simulator, ramp 1000 W/s, daemon options {:?}",
        if full { "bench" } else { "smoke" },
        steps,
        daemon_args
    );
    println!(
        "  step -> HR3 write latency ms: p50 {:.0}  p95 {:.0}  max {:.0}  (steps without a write: {missed})",
        pct(&latencies_ms, 50.0),
        pct(&latencies_ms, 95.0),
        pct(&latencies_ms, 100.0)
    );
    println!(
        "  HR3 writes per step: p50 {:.0}  p95 {:.0}  max {:.0}  (total {})",
        pct(&per_step, 50.0),
        pct(&per_step, 95.0),
        pct(&per_step, 100.0),
        per_step.iter().sum::<f64>()
    );
}
