//! Meter step -> HR3 write latency and writes per step, in closed loop: the real daemon, the
//! simulator with realistic 9600 baud timing and its plant model (inverter ramping at
//! 1000 W/s), a private dbus-daemon, the settings stand-in and battery + vebus stand-ins.
//!
//! `cargo bench --bench limiter_latency`: 40 load steps in up/down pairs (issue 14): the load
//! rises by 200–1000 W (the meter shows that much import: a raise is due), then falls back by as
//! much, which crosses into export (the meter shows −200…−1000 W: an urgent lowering is due).
//! Steps are 11 s + a random 0–1 s apart (longer than the actuator's 6 s reversal window, so every step is judged
//! on its own, not as a cycling load). Run at the Growatt's default pace and again at a 1 s pace
//! (`--command-interval 1=1000`). Without `--bench` (under `cargo test --all-targets`): 2 steps
//! at the default pace only.
//!
//! Latency is from the moment the step is applied to the simulator's plant to the first HR3
//! write the simulator logs after it (a lowering for a load fall, a raise for a load rise);
//! writes per step count every HR3 write until the next step. The targets (issue 14, open
//! loop): lowering on export p95 ≤ 0.5 s, raise p90 ≤ 0.8 s, ≤ 2 writes per step.
//! `LIMITER_LATENCY_DAEMON_ARGS="--max-transaction 40"` passes extra options to the daemon.

use std::time::{Duration, SystemTime};

use modbus_sim::Plant;
use testkit::limiter::Hr3Write;
use testkit::{INVERTER, Rig, Rng, Value, percentile, wait_for};

const EXE: &str = env!("CARGO_BIN_EXE_dbus-modbus-client");
const WAIT: Duration = Duration::from_secs(15);
const BASE_LOAD_W: f64 = 1500.0;
const LOWERING_P95_MS: f64 = 500.0;
const RAISE_P90_MS: f64 = 800.0;
const WRITES_PER_STEP_MAX: f64 = 2.0;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (steps, pause) = if full {
        (40, Duration::from_secs(11))
    } else {
        (2, Duration::from_secs(4))
    };
    let extra = std::env::var("LIMITER_LATENCY_DAEMON_ARGS").unwrap_or_default();
    // `LIMITER_LATENCY_FIXED_PAUSE=1`: steps exactly 11 s apart, as the first runs of this bench.
    let jittered = std::env::var("LIMITER_LATENCY_FIXED_PAUSE").is_err();
    let mut paces: Vec<(&str, Vec<&str>)> = vec![("default Growatt pace", Vec::new())];
    if full {
        paces.push(("1 s Growatt pace", vec!["--command-interval", "1=1000"]));
    }
    println!(
        "limiter_latency ({}): {steps} load steps in up/down pairs of 200-1000 W around {BASE_LOAD_W:.0} W, \
         {} s{} apart, 9600 baud realistic simulator, ramp 1000 W/s, extra daemon options {extra:?}",
        if full { "bench" } else { "smoke" },
        pause.as_secs(),
        if jittered { " + 0-1 s" } else { "" }
    );
    for (label, mut args) in paces {
        args.extend(extra.split_whitespace());
        let result = run(steps, pause, jittered, &args);
        result.print(label, &args);
    }
}

/// One load step and the HR3 writes until the next.
struct Step {
    up: bool,
    /// Latency to the first write in the step's direction, ms.
    latency_ms: Option<f64>,
    writes: usize,
}

struct Result {
    steps: Vec<Step>,
}

fn run(steps: usize, pause: Duration, jittered: bool, daemon_args: &[&str]) -> Result {
    let rig = Rig::start_limiter(
        EXE,
        Plant {
            load_w: BASE_LOAD_W,
            pv_available_w: 3800.0,
            ramp_w_per_s: 1000.0,
        },
        daemon_args,
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
    // Its own stream: the step sizes stay those of the fixed-pause runs.
    let mut jitter_rng = Rng(0x5eed_1a7e);
    let mut applied: Vec<(SystemTime, bool)> = Vec::new();
    for i in 0..steps {
        let up = i % 2 == 0;
        let load = if up {
            BASE_LOAD_W + 200.0 + rng.below(801) as f64
        } else {
            BASE_LOAD_W
        };
        rig.set_load(load);
        applied.push((SystemTime::now(), up));
        // A random extra 0–1 s, so the steps fall at every phase of the inverter's read cycle
        // (0.4 s or 1 s), not at the few phases a fixed pause would sample.
        let jitter = Duration::from_millis(if jittered {
            jitter_rng.below(1001) as u64
        } else {
            0
        });
        std::thread::sleep(pause + jitter);
    }
    let writes = rig.hr3_writes();
    let held_before = |at: SystemTime| {
        writes
            .iter()
            .rev()
            .find(|w| w.at < at)
            .map_or(100, |w| w.percent)
    };
    let steps = applied
        .iter()
        .enumerate()
        .map(|(i, &(at, up))| {
            let end = applied.get(i + 1).map(|&(e, _)| e);
            let of_step: Vec<&Hr3Write> = writes
                .iter()
                .filter(|w| w.at >= at && end.is_none_or(|e| w.at < e))
                .collect();
            let held = held_before(at);
            let latency_ms = of_step
                .iter()
                .find(|w| (w.percent > held) == up && w.percent != held)
                .map(|w| w.at.duration_since(at).unwrap_or_default().as_secs_f64() * 1000.0);
            Step {
                up,
                latency_ms,
                writes: of_step.len(),
            }
        })
        .collect();
    Result { steps }
}

impl Result {
    fn print(&self, label: &str, args: &[&str]) {
        let pct = |v: &[f64], p: f64| percentile(v, p).unwrap_or(f64::NAN);
        let latencies = |up: bool| {
            let mut v: Vec<f64> = self
                .steps
                .iter()
                .filter(|s| s.up == up)
                .filter_map(|s| s.latency_ms)
                .collect();
            v.sort_by(f64::total_cmp);
            let missed = self
                .steps
                .iter()
                .filter(|s| s.up == up && s.latency_ms.is_none())
                .count();
            (v, missed)
        };
        let (lowering, lowering_missed) = latencies(false);
        let (raise, raise_missed) = latencies(true);
        let mut per_step: Vec<f64> = self.steps.iter().map(|s| s.writes as f64).collect();
        per_step.sort_by(f64::total_cmp);
        let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
        let lowering_p95 = pct(&lowering, 95.0);
        let raise_p90 = pct(&raise, 90.0);
        let writes_max = pct(&per_step, 100.0);
        println!("{label}, daemon options {args:?}:");
        println!(
            "  load fall into export -> lowering write ms: p50 {:.0}  p95 {lowering_p95:.0}  max {:.0}  \
             (steps without one: {lowering_missed})  target p95 <= {LOWERING_P95_MS:.0}: {}",
            pct(&lowering, 50.0),
            pct(&lowering, 100.0),
            verdict(lowering_missed == 0 && lowering_p95 <= LOWERING_P95_MS)
        );
        println!(
            "  load rise -> raise write ms: p50 {:.0}  p90 {raise_p90:.0}  max {:.0}  \
             (steps without one: {raise_missed})  target p90 <= {RAISE_P90_MS:.0}: {}",
            pct(&raise, 50.0),
            pct(&raise, 100.0),
            verdict(raise_missed == 0 && raise_p90 <= RAISE_P90_MS)
        );
        println!(
            "  HR3 writes per step: p50 {:.0}  p95 {:.0}  max {writes_max:.0}  mean {:.2}  \
             (total {})  target <= {WRITES_PER_STEP_MAX:.0}: {}",
            pct(&per_step, 50.0),
            pct(&per_step, 95.0),
            per_step.iter().sum::<f64>() / per_step.len().max(1) as f64,
            per_step.iter().sum::<f64>(),
            verdict(writes_max <= WRITES_PER_STEP_MAX)
        );
    }
}
