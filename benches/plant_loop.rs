//! Closed-loop plant benchmark (issue 14): the daemon's limiter on the paced bus of the schedule
//! (issue 13), side by side with the original driver's policy at its own pace, on one seeded
//! house and sky, against a "plant floor" that only the inverter's dead time and ramp limit.
//!
//! `cargo bench --bench plant_loop` runs three scenarios (default: induction hob period 5–10 s
//! and the Growatt's default 400 ms command interval; hob period 4 s; Growatt interval 1000 ms)
//! over a 1620 s house. Without `--bench` (under `cargo test --all-targets`) it runs the default
//! scenario over the first 300 s as a smoke pass, and asserts nothing about the figures.
//! Options (after `--`): `--dead-time S` (default 0.3), `--ramp W_PER_S` (default 1000),
//! `--growatt-interval MS` (default 400; the third scenario always uses 1000), `--seed N`,
//! `--secs S` (length of the house, 60–1620), `--trace` (every HR3 write to stderr).
//!
//! The model (nothing of it measured on the site):
//! - **Plant**, stepped and integrated at 20 Hz: the inverter's output ramps towards
//!   `min(cap, available)` at the ramp rate, both ways; a new HR3 takes effect the dead time after
//!   its write ends on the wire; clouds act on `available` directly (the output never exceeds
//!   it). No battery activity (full and idle, or no ESS): `grid = load − pv`, so the import
//!   the site pays for is what the limiter fails to produce. The inverter's own export limit
//!   (G100 via its meter input) is not modelled: the check is that the limiter never needs it.
//! - **House** (seeded): base load drifting 190–350 W (≤ 0.25 W/s) with per-second noise, a
//!   fridge cycling 110 W, a kettle 2.8 kW for 2–3 min, a microwave 1.2 kW, an induction hob
//!   pulsing 2 kW on/off (50 % duty) with a 5–10 s period for 10 min, a washing-machine heater
//!   2 kW for 5 min; sun ~3.9 kW available with two clouds dropping it to 600–1500 W for 20–90 s with
//!   2–6 s edges, one while the kettle boils and one while the washer heats.
//! - **Site**: configured as the users' (energyDifference set, offset −50 kWh, derate on), so
//!   §1 rule 5 (limiting) applies throughout; rated 4200 W, export limit 3680 W.
//! - **Daemon** (the "paced bus"): `limiter::Controller` with the Growatt's `PercentOfRated`
//!   encoding, driven as `app/generation.rs` drives it: a decision on every fresh meter reading
//!   (and at least every 250 ms), the wanted setting written in the Growatt's next slot, no
//!   decision while a write is in flight. The bus is the schedule of `app/port.rs` in simulated
//!   time: the real register maps of the SDM230 and the Growatt plan every read (so the
//!   Growatt's other registers take their slots too), earliest due first, writes before reads,
//!   the bus kept free for a more urgent unit about to be ready; the meter's 60 ms silence and
//!   the Growatt's command interval counted from the end of its previous exchange; 9600 8N1,
//!   20 ms turnaround. Read by need: while the decision is a limit, the meter's power and the
//!   Growatt's AC power as fast as their paces allow; otherwise the meter at the 200 ms publish
//!   interval and the AC power every few seconds. Meter noise ±10 W, PV reading noise ±3 W.
//! - **Original** (limiter.md §1, at its own pace): `decide` and `ReferenceSmoother` (the
//!   per-event 0.2/0.8 average, a write whenever it moved > 1 point); its grid reading every
//!   300 ms, its own PV reading every 5 s, one decision per D-Bus event: the grid reading and the
//!   battery, vebus and system signals (once a second each); each write lands 37 ms after its
//!   event (it wrote synchronously, never waiting for the Growatt's interval). The targets'
//!   ratios are against this.
//! - **Original's policy on the paced bus**: the same policy and smoothing on the daemon's bus
//!   (grid and PV readings as the schedule brings them, a decision per meter read and per
//!   battery/vebus/system signal, each write waiting for the Growatt's slot, a newer one
//!   replacing it meanwhile): what the original would do at the pace the daemon keeps.
//! - **Plant floor**: commands the cap = the load, exactly, at every plant step; only the dead
//!   time and the ramp stand between it and zero export/import.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use dbus_modbus_client::devices::{PlannedRead, ReadPlanner, growatt_limit_encoding};
use dbus_modbus_client::limiter::{
    Controller, Inputs, PercentOfRated, Reading, ReferenceSmoother, Setting, Settings, Target,
    decide, pv_read_interval,
};
use testkit::{SplitMix, keyed_noise};

/// Simulated time in microseconds since the start.
type Us = u64;

const DT_US: Us = 50_000;
const DT: f64 = 0.05;
const HOUSE_S: f64 = 1620.0;
const SHORT_S: f64 = 300.0;
/// The induction hob pulses for these 10 min.
const HOB_S: std::ops::Range<f64> = 480.0..1080.0;
const RATED_W: f64 = 4200.0;
const EXPORT_LIMIT_W: f64 = 3680.0;
const ENERGY_DIFFERENCE_KWH: i64 = 4050;
const CONSUMPTION_START_KWH: f64 = 4000.0;
const SEED: u64 = 0x5eed_1014;
/// An appliance change at least this large (and an ideal output change as large) is a load step.
const STEP_THRESHOLD_W: f64 = 200.0;
/// A step's first write is looked for until the next step, at most this long.
const STEP_WINDOW_US: Us = 30_000_000;
/// A step needs a write when the setting held is further than this from the ideal output.
const NEEDED_W: f64 = 100.0;
/// Export above one point of rated power counts towards the longest export: less is within the
/// percent's rounding up.
const EXPORT_RUN_W: f64 = RATED_W / 100.0;
/// Steady: no appliance change and no cloud for this long before.
const STEADY_AFTER_US: Us = 20_000_000;
/// Figures count from here: before it the limiter starts, from full power.
const WARM_UP_US: Us = 30_000_000;

// Bus: 9600 8N1, 10 bits per character.
const CHAR_NS: u64 = 10 * 1_000_000_000 / 9600;
const TURNAROUND_US: Us = 20_000;
const PUBLISH_US: Us = 200_000;
const DECIDE_AT_LEAST_EVERY_US: Us = 250_000;
/// `app/port.rs`: the inverter's input every max(2 s, 3 commands) when the limiter does not
/// need it.
const FEW_SECONDS_US: Us = 2_000_000;
const MAX_TRANSACTION: Duration = Duration::from_millis(100);

// The original's pace.
const ORIGINAL_GRID_US: Us = 300_000;
const ORIGINAL_PV_US: Us = 5_000_000;
/// Battery, vebus and system signals, one each per second.
const ORIGINAL_AUX_US: Us = 1_000_000 / 3;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let value = |flag: &str| -> Option<f64> {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
    };
    let base = Config {
        dead_time_us: (value("--dead-time").unwrap_or(0.3) * 1e6).round().max(0.0) as Us,
        ramp_w_per_s: value("--ramp").unwrap_or(1000.0).max(1.0),
        growatt_interval_us: (value("--growatt-interval").unwrap_or(400.0) * 1e3)
            .round()
            .max(0.0) as Us,
        hob_period_s: (5.0, 10.0),
        secs: value("--secs")
            .unwrap_or(if full { HOUSE_S } else { SHORT_S })
            .clamp(60.0, HOUSE_S),
        seed: args
            .iter()
            .position(|a| a == "--seed")
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(SEED),
        trace: args.iter().any(|a| a == "--trace"),
    };
    let scenarios: Vec<(&str, Config)> = if full {
        vec![
            ("default", base),
            (
                "hob period 4 s",
                Config {
                    hob_period_s: (4.0, 4.0),
                    ..base
                },
            ),
            (
                "Growatt pace 1 s",
                Config {
                    growatt_interval_us: 1_000_000,
                    ..base
                },
            ),
        ]
    } else {
        vec![("smoke: default", base)]
    };
    let started = Instant::now();
    for (name, config) in scenarios {
        let house = House::new(&config);
        let result = run(&config, &house);
        report(name, &config, &house, &result);
    }
    println!(
        "(simulated in {:.2} s wall time)",
        started.elapsed().as_secs_f64()
    );
}

#[derive(Clone, Copy)]
struct Config {
    dead_time_us: Us,
    ramp_w_per_s: f64,
    growatt_interval_us: Us,
    hob_period_s: (f64, f64),
    secs: f64,
    seed: u64,
    trace: bool,
}

fn secs(t: Us) -> f64 {
    t as f64 / 1e6
}

// ---------------------------------------------------------------------------------------------
// House and sky

struct Cloud {
    start: f64,
    end: f64,
    edge: f64,
    level_w: f64,
}

/// The profile every controller sees, per plant step.
struct House {
    load: Vec<f64>,
    appliances: Vec<f64>,
    available: Vec<f64>,
    clouds: Vec<Cloud>,
    /// Load steps: (plant step, up).
    steps: Vec<(usize, bool)>,
    /// Clouds' trailing edges: (plant step where it begins, where it ends).
    cloud_ends: Vec<(usize, usize)>,
    steady: Vec<bool>,
}

fn clear_sky(t: f64) -> f64 {
    3900.0 + 60.0 * (std::f64::consts::TAU * t / 1300.0).sin()
}

/// Drifting slowly (at most ~0.25 W/s: a point of rated power every ~3 min), with per-second
/// noise.
fn base_load(t: f64) -> f64 {
    let tau = std::f64::consts::TAU;
    270.0 + 65.0 * (tau * t / 1620.0 + 1.0).sin() + keyed_noise(t as u64, 1, 15.0)
}

impl House {
    fn new(config: &Config) -> Self {
        let mut rng = SplitMix(config.seed);
        let mut on: Vec<(f64, f64, f64)> = Vec::new(); // (start s, duration s, W)
        let mut t = rng.uniform(0.0, 100.0);
        while t < HOUSE_S {
            let length = rng.uniform(90.0, 150.0);
            on.push((t, length, 110.0));
            t += length + rng.uniform(150.0, 250.0);
        }
        let kettle = (rng.uniform(40.0, 70.0), rng.uniform(120.0, 180.0), 2800.0);
        let washer = (rng.uniform(1110.0, 1140.0), 300.0, 2000.0);
        on.extend([
            kettle,
            (rng.uniform(330.0, 360.0), rng.uniform(60.0, 120.0), 1200.0),
            washer,
        ]);
        // One cloud while the kettle boils, one while the washer heats: both leave less PV
        // than the load, so their ends want a raise.
        let clouds: Vec<Cloud> = [(kettle, 10.0, 25.0), (washer, 30.0, 120.0)]
            .iter()
            .map(|&((on_at, on_for, _), from, to)| {
                let start = on_at + rng.uniform(from, to);
                let edge = rng.uniform(2.0, 6.0);
                let room = on_at + on_for - 15.0 - edge - start;
                Cloud {
                    start,
                    end: start + rng.uniform(20.0, 90.0).min(room),
                    edge,
                    level_w: rng.uniform(600.0, 1500.0),
                }
            })
            .collect();
        // The hob from its own sequence, so that its period leaves the rest of the house alone.
        let mut hob_rng = SplitMix(config.seed ^ 0x40b);
        let mut t = HOB_S.start;
        while t < HOB_S.end {
            let (low, high) = config.hob_period_s;
            let period = if high > low {
                hob_rng.uniform(low, high)
            } else {
                low
            };
            on.push((t, (period / 2.0).min(HOB_S.end - t), 2000.0));
            t += period;
        }

        let n = (config.secs / DT).round() as usize;
        let mut house = House {
            load: Vec::with_capacity(n),
            appliances: Vec::with_capacity(n),
            available: Vec::with_capacity(n),
            clouds,
            steps: Vec::new(),
            cloud_ends: Vec::new(),
            steady: Vec::with_capacity(n),
        };
        let mut last_change: Option<usize> = None;
        for k in 0..n {
            let t = k as f64 * DT;
            let appliances: f64 = on
                .iter()
                .filter(|&&(start, length, _)| t >= start && t < start + length)
                .map(|&(_, _, w)| w)
                .sum();
            let load = appliances + base_load(t);
            let available = house.available_at(t);
            if k > 0 {
                let delta = appliances - house.appliances[k - 1];
                let ideal_before = house.load[k - 1].min(house.available[k - 1]);
                let ideal_delta = load.min(available) - ideal_before;
                if delta.abs() >= STEP_THRESHOLD_W && ideal_delta.abs() >= STEP_THRESHOLD_W {
                    house.steps.push((k, delta > 0.0));
                }
                if delta != 0.0 {
                    last_change = Some(k);
                }
            }
            let cloudy = house
                .clouds
                .iter()
                .any(|c| t + 1e-9 >= c.start && t < c.end + c.edge + secs(STEADY_AFTER_US));
            let quiet = last_change.is_none_or(|c| (k - c) as f64 * DT >= secs(STEADY_AFTER_US));
            house.steady.push(quiet && !cloudy && t >= secs(WARM_UP_US));
            house.load.push(load);
            house.appliances.push(appliances);
            house.available.push(available);
        }
        for c in &house.clouds {
            let k = (c.end / DT).round() as usize;
            if k < n {
                house
                    .cloud_ends
                    .push((k, ((c.end + c.edge) / DT).ceil() as usize));
            }
        }
        house
    }

    fn available_at(&self, t: f64) -> f64 {
        let clear = clear_sky(t);
        self.clouds.iter().fold(clear, |w, c| {
            if t < c.start || t > c.end + c.edge {
                return w;
            }
            let into = ((t - c.start) / c.edge).min(1.0);
            let out = if t > c.end {
                1.0 - (t - c.end) / c.edge
            } else {
                1.0
            };
            let depth = into.min(out).max(0.0);
            w.min(clear - (clear - c.level_w) * depth)
        })
    }

    fn len(&self) -> usize {
        self.load.len()
    }
}

// ---------------------------------------------------------------------------------------------
// Plant and what it measures

struct Plant {
    pv: f64,
    cap_w: f64,
    /// Caps waiting for the dead time: (takes effect at, W).
    commands: VecDeque<(Us, f64)>,
    dead_time_us: Us,
    ramp_per_step: f64,
}

impl Plant {
    /// Producing `pv` at full power (HR3 = 100 %).
    fn new(config: &Config, pv: f64) -> Self {
        Self {
            pv,
            cap_w: RATED_W,
            commands: VecDeque::new(),
            dead_time_us: config.dead_time_us,
            ramp_per_step: config.ramp_w_per_s * DT,
        }
    }

    /// A new cap lands on the inverter at `at`.
    fn command(&mut self, at: Us, cap_w: f64) {
        self.commands.push_back((at + self.dead_time_us, cap_w));
    }

    fn step(&mut self, t: Us, available: f64) {
        while let Some(&(at, cap)) = self.commands.front()
            && at <= t
        {
            self.cap_w = cap;
            self.commands.pop_front();
        }
        let target = self.cap_w.min(available);
        self.pv = if target > self.pv {
            (self.pv + self.ramp_per_step).min(target)
        } else {
            (self.pv - self.ramp_per_step).max(target)
        }
        .min(available);
    }
}

#[derive(Default)]
struct Tally {
    exported_wh: f64,
    imported_wh: f64,
    unavoidable_wh: f64,
    curtailed_beyond_wh: f64,
    largest_export_w: f64,
    export_run_s: f64,
    longest_export_s: f64,
    /// Imported beyond the unavoidable while the hob pulses.
    import_beyond_hob_wh: f64,
}

impl Tally {
    fn add(&mut self, load: f64, available: f64, pv: f64, hob_on: bool) {
        let wh = DT / 3600.0;
        let grid = load - pv;
        if hob_on {
            self.import_beyond_hob_wh += (grid.max(0.0) - (load - available).max(0.0)) * wh;
        }
        self.exported_wh += (-grid).max(0.0) * wh;
        self.imported_wh += grid.max(0.0) * wh;
        self.unavoidable_wh += (load - available).max(0.0) * wh;
        self.curtailed_beyond_wh += (load.min(available) - pv).max(0.0) * wh;
        self.largest_export_w = self.largest_export_w.max(-grid);
        if -grid > EXPORT_RUN_W {
            self.export_run_s += DT;
            self.longest_export_s = self.longest_export_s.max(self.export_run_s);
        } else {
            self.export_run_s = 0.0;
        }
    }

    fn import_beyond_wh(&self) -> f64 {
        self.imported_wh - self.unavoidable_wh
    }
}

#[derive(Clone, Copy)]
struct Write {
    at: Us,
    value: u16,
    previous: u16,
}

/// One controller in closed loop with its own plant.
struct Side {
    plant: Plant,
    tally: Tally,
    writes: Vec<Write>,
    hr3: u16,
    trace: Option<&'static str>,
}

impl Side {
    fn new(config: &Config, name: &'static str, pv: f64) -> Self {
        Self {
            plant: Plant::new(config, pv),
            tally: Tally::default(),
            writes: Vec::new(),
            hr3: 100,
            trace: config.trace.then_some(name),
        }
    }

    /// An HR3 write that ended on the wire at `at`.
    fn wrote(&mut self, at: Us, setting: Setting, load: f64) {
        let value = setting.0;
        if let Some(name) = self.trace {
            eprintln!(
                "{name:<10} {:>8.3} s HR3 {:>3} -> {value:>3}  load {load:>5.0}  pv {:>5.0}",
                secs(at),
                self.hr3,
                self.plant.pv
            );
        }
        self.writes.push(Write {
            at,
            value,
            previous: self.hr3,
        });
        self.hr3 = value;
        self.plant
            .command(at, encoding().watts(setting, RATED_W).min(RATED_W));
    }
}

fn encoding() -> PercentOfRated {
    growatt_limit_encoding()
}

fn site_settings() -> Settings {
    Settings {
        energy_difference: ENERGY_DIFFERENCE_KWH,
        derate_enabled: true,
        rated_w: RATED_W,
        export_limit_w: EXPORT_LIMIT_W,
        ..Settings::default()
    }
}

/// Simulated time as `Instant`s for the limiter's API; a second ahead of the register maps'
/// creation so that their "never read" registers are due from the start.
struct Clock(Instant);

impl Clock {
    fn new() -> Self {
        Self(Instant::now() + Duration::from_secs(1))
    }
    fn at(&self, t: Us) -> Instant {
        self.0 + Duration::from_micros(t)
    }
    fn us(&self, at: Instant) -> Us {
        at.saturating_duration_since(self.0).as_micros() as Us
    }
}

// ---------------------------------------------------------------------------------------------
// The daemon on the paced bus

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Who {
    Meter,
    Growatt,
}

struct BusUnit {
    map: ReadPlanner,
    silence_us: Us,
    interval_us: Us,
    last_done: Option<Us>,
    /// Duration of its last read, request to reply.
    last_read_us: Us,
}

impl BusUnit {
    fn new(vendor: &str, interval_us: Option<Us>) -> Self {
        let char_time = Duration::from_nanos(CHAR_NS);
        let map =
            ReadPlanner::for_vendor(vendor, char_time, MAX_TRANSACTION).expect("a supported model");
        let bus = map.bus();
        Self {
            map,
            silence_us: bus.silence_before_request.as_micros() as Us,
            interval_us: interval_us.unwrap_or(bus.min_command_interval.as_micros() as Us),
            last_done: None,
            last_read_us: 0,
        }
    }

    fn ready(&self, line_quiet: Us) -> Us {
        let frame_silence = (35 * CHAR_NS / 10).div_ceil(1000);
        let line = line_quiet + frame_silence.max(self.silence_us);
        self.last_done
            .map_or(line, |done| line.max(done + self.interval_us))
    }
}

#[derive(Clone, Copy, Debug)]
enum What {
    Write(Setting),
    Read(Who),
}

#[derive(Clone, Copy, Debug)]
struct Candidate {
    what: What,
    who: Who,
    due: Us,
    ready: Us,
    takes: Us,
    rank: u8,
}

impl Candidate {
    fn urgency(&self) -> (Us, u8) {
        (self.due, self.rank)
    }
}

/// `app/port.rs`'s `choose`: the most urgent startable candidate, unless a more urgent one of
/// another unit becomes ready before it would end.
fn choose(now: Us, candidates: &[Candidate]) -> Option<Candidate> {
    let startable = |c: &&Candidate| c.due <= now && c.ready <= now;
    let best = candidates
        .iter()
        .filter(startable)
        .min_by_key(|c| c.urgency())?;
    let ends = now + best.takes;
    let keep_free = candidates.iter().any(|c| {
        c.who != best.who && c.urgency() < best.urgency() && c.ready > now && c.ready < ends
    });
    (!keep_free).then_some(*best)
}

struct Job {
    end: Us,
    what: What,
    read: Option<PlannedRead>,
    started: Us,
    /// The value measured when the request arrived.
    value: f64,
}

fn wire_us(bytes: u64) -> Us {
    (bytes * CHAR_NS).div_ceil(1000)
}

fn read_us(count: u16) -> Us {
    wire_us(8 + 5 + 2 * u64::from(count)) + TURNAROUND_US
}

fn write_us() -> Us {
    wire_us(8 + 8) + TURNAROUND_US
}

/// What decides on the paced bus.
enum Policy {
    /// The daemon's controller.
    Daemon(Box<Controller>),
    /// The original's policy and smoothing, deciding on the grid readings the paced bus brings
    /// and on the battery, vebus and system signals; what it writes waits for the Growatt's
    /// slot, a newer write replacing one not yet made.
    Original {
        smoother: ReferenceSmoother,
        inputs: Box<Inputs>,
        next_aux: Us,
    },
}

/// A policy on the bus schedule of `app/port.rs` (the daemon's, or the original's for
/// comparison at the same pace).
struct Daemon {
    policy: Policy,
    clock: Clock,
    meter: BusUnit,
    growatt: BusUnit,
    line_quiet: Us,
    job: Option<Job>,
    now: Us,
    /// The setting the controller wants written (the app's `Generation::pending`).
    pending: Option<Setting>,
    last_decided: Option<Us>,
    consumption_kwh: f64,
    /// Times of the AC power readings the controller got.
    pv_reads: Vec<Us>,
    meter_reads: u64,
    growatt_commands: u64,
    words: [u16; 125],
}

impl Daemon {
    fn new(config: &Config, original: bool) -> Self {
        let clock = Clock::new();
        let policy = if original {
            Policy::Original {
                smoother: ReferenceSmoother::new(RATED_W, encoding()),
                inputs: Box::default(),
                next_aux: 150_000,
            }
        } else {
            let mut controller = Controller::new(site_settings());
            controller.attach_inverter(encoding());
            // The set-up read HR3 = 255: full power.
            controller.inverter_reinitialised(encoding().full_power());
            Policy::Daemon(Box::new(controller))
        };
        Self {
            policy,
            clock,
            meter: BusUnit::new("eastron", None),
            growatt: BusUnit::new("growatt", Some(config.growatt_interval_us)),
            line_quiet: 0,
            job: None,
            now: 0,
            pending: None,
            last_decided: None,
            consumption_kwh: CONSUMPTION_START_KWH,
            pv_reads: Vec::new(),
            meter_reads: 0,
            growatt_commands: 0,
            words: [0; 125],
        }
    }

    fn candidates(&self) -> ([Option<Candidate>; 3], usize) {
        let mut out = [None; 3];
        let mut n = 0;
        let growatt_ready = self.growatt.ready(self.line_quiet);
        if let Some(setting) = self.pending {
            out[n] = Some(Candidate {
                what: What::Write(setting),
                who: Who::Growatt,
                due: 0,
                ready: growatt_ready,
                takes: write_us(),
                rank: 0,
            });
            n += 1;
        }
        for (who, unit) in [(Who::Meter, &self.meter), (Who::Growatt, &self.growatt)] {
            if let Some(due) = unit.map.next_due() {
                let takes = if unit.last_read_us > 0 {
                    unit.last_read_us
                } else {
                    read_us(2)
                };
                out[n] = Some(Candidate {
                    what: What::Read(who),
                    who,
                    due: self.clock.us(due),
                    ready: unit.ready(self.line_quiet),
                    takes,
                    rank: 2,
                });
                n += 1;
            }
        }
        (out, n)
    }

    /// The next transaction the schedule starts at or after `self.now`, and when.
    fn next_start(&self) -> Option<(Us, Candidate)> {
        let (slots, n) = self.candidates();
        let list: Vec<Candidate> = slots[..n].iter().flatten().copied().collect();
        let mut t = self.now;
        loop {
            if let Some(c) = choose(t, &list) {
                return Some((t, c));
            }
            t = list
                .iter()
                .map(|c| c.due.max(c.ready))
                .filter(|&x| x > t)
                .min()?;
        }
    }

    /// Runs the bus and the controller until `limit`, against the plant as it stands.
    fn run_until(&mut self, limit: Us, side: &mut Side, load: f64) {
        loop {
            let writing = matches!(
                self.job,
                Some(Job {
                    what: What::Write(_),
                    ..
                })
            );
            let decide_at = match &self.policy {
                Policy::Daemon(_) => (!writing)
                    .then(|| self.last_decided.map(|t| t + DECIDE_AT_LEAST_EVERY_US))
                    .flatten(),
                // The original's D-Bus signals come whatever the bus does.
                Policy::Original { next_aux, .. } => Some(*next_aux),
            };
            let start = if self.job.is_none() {
                self.next_start()
            } else {
                None
            };
            let job_end = self.job.as_ref().map(|j| j.end);
            let next = [job_end, decide_at, start.map(|s| s.0)]
                .into_iter()
                .flatten()
                .min();
            let Some(t) = next.filter(|&t| t < limit) else {
                return;
            };
            self.now = self.now.max(t);
            if job_end == Some(t) {
                self.complete(side, load);
            } else if decide_at == Some(t) {
                if let Policy::Original { next_aux, .. } = &mut self.policy {
                    *next_aux += ORIGINAL_AUX_US;
                }
                self.decide();
            } else if let Some((_, c)) = start {
                self.start(c, side, load);
            }
        }
    }

    fn start(&mut self, c: Candidate, side: &Side, load: f64) {
        let now = self.now;
        let (duration, read, value) = match c.what {
            // The original's average may come back to what the inverter holds before the slot
            // does: no write then (the daemon's controller never asks for that).
            What::Write(setting) if setting.0 == side.hr3 => {
                self.pending = None;
                return;
            }
            What::Write(_) => (write_us(), None, 0.0),
            What::Read(who) => {
                let unit = match who {
                    Who::Meter => &self.meter,
                    Who::Growatt => &self.growatt,
                };
                let Some(read) = unit.map.next_read(self.clock.at(now)) else {
                    // Nothing to read after all: look again a moment later.
                    self.now += 1;
                    return;
                };
                let key = now / 1000;
                let value = match who {
                    Who::Meter => load - side.plant.pv + keyed_noise(key, 2, 10.0),
                    Who::Growatt => side.plant.pv + keyed_noise(key, 3, 3.0),
                };
                (read_us(read.count()), Some(read), value)
            }
        };
        self.job = Some(Job {
            end: now + duration,
            what: c.what,
            read,
            started: now,
            value,
        });
    }

    fn complete(&mut self, side: &mut Side, load: f64) {
        let Some(job) = self.job.take() else {
            return;
        };
        let now = self.now;
        let at = self.clock.at(now);
        self.line_quiet = now;
        match job.what {
            What::Write(setting) => {
                self.growatt.last_done = Some(now);
                self.growatt_commands += 1;
                if let Policy::Daemon(c) = &mut self.policy {
                    c.written(setting, true, at);
                }
                self.pending = None;
                side.wrote(now, setting, load);
            }
            What::Read(who) => {
                let Some(read) = job.read else {
                    return;
                };
                let unit = match who {
                    Who::Meter => &mut self.meter,
                    Who::Growatt => &mut self.growatt,
                };
                unit.last_done = Some(now);
                unit.last_read_us = now - job.started;
                let n = usize::from(read.count()).min(self.words.len());
                unit.map.store(&read, &self.words[..n], at);
                match who {
                    Who::Meter => {
                        self.meter_reads += 1;
                        self.consumption_kwh += job.value * secs(now - job.started) / 3.6e6;
                        if covers(&read, 0x0048) {
                            let r = Reading::new(self.consumption_kwh, at);
                            match &mut self.policy {
                                Policy::Daemon(c) => c.on_consumption(r),
                                Policy::Original { inputs, .. } => inputs.consumption = Some(r),
                            }
                        }
                        if read.fast() {
                            let r = Reading::new(job.value, at);
                            match &mut self.policy {
                                Policy::Daemon(c) => c.on_grid(r),
                                Policy::Original { inputs, .. } => inputs.grid = Some(r),
                            }
                        }
                        // The app decides on every meter read (a slow block brings the same
                        // grid reading again).
                        self.decide();
                    }
                    Who::Growatt => {
                        self.growatt_commands += 1;
                        if read.fast() {
                            let r = Reading::new(job.value, at);
                            match &mut self.policy {
                                Policy::Daemon(c) => c.on_pv(r),
                                Policy::Original { inputs, .. } => inputs.pv = Some(r),
                            }
                            self.pv_reads.push(now);
                        }
                    }
                }
            }
        }
    }

    /// `Generation::decide` and the read paces the app then sets.
    fn decide(&mut self) {
        let now = self.now;
        let at = self.clock.at(now);
        let target = match &mut self.policy {
            Policy::Daemon(c) => {
                self.pending = c.step(at, true);
                c.decision().target
            }
            Policy::Original {
                smoother, inputs, ..
            } => {
                let decision = decide(inputs, &site_settings(), at);
                if let Some(setting) = smoother.on_event(&decision) {
                    self.pending = Some(setting);
                }
                decision.target
            }
        };
        self.last_decided = Some(now);
        let tracking = matches!(target, Target::Limit(_));
        let early = |u: &BusUnit| u.interval_us + u.last_read_us;
        let meter_age = (!tracking).then(|| PUBLISH_US.saturating_sub(early(&self.meter)));
        let few = FEW_SECONDS_US.max(3 * self.growatt.interval_us);
        // While limiting, the daemon reads the inverter at the pace its controller asks for
        // (`limiter::pv_read_interval`, as `app::set_read_paces`); the original's policy has no
        // estimate to carry PV between readings and gets every slot.
        let growatt_age = match &self.policy {
            Policy::Daemon(c) if tracking => {
                let interval = Duration::from_micros(self.growatt.interval_us);
                let every = pv_read_interval(c.pv_settled(at), interval).as_micros() as Us;
                Some(every.saturating_sub(early(&self.growatt)))
            }
            _ if tracking => None,
            _ => Some(few.saturating_sub(early(&self.growatt))),
        };
        self.meter
            .map
            .set_fast_age(meter_age.map(Duration::from_micros));
        self.growatt
            .map
            .set_fast_age(growatt_age.map(Duration::from_micros));
    }
}

fn covers(read: &PlannedRead, addr: u16) -> bool {
    read.input_registers() && read.addr() <= addr && addr < read.addr() + read.count()
}

// ---------------------------------------------------------------------------------------------
// The original at its own pace

struct Original {
    smoother: ReferenceSmoother,
    inputs: Inputs,
    clock: Clock,
    next_grid: Us,
    next_pv: Us,
    next_aux: Us,
    /// Writes on the wire: (lands at, setting).
    landing: VecDeque<(Us, Setting)>,
}

impl Original {
    fn new() -> Self {
        Self {
            smoother: ReferenceSmoother::new(RATED_W, encoding()),
            inputs: Inputs::default(),
            clock: Clock::new(),
            next_grid: 100_000,
            next_pv: 2_000_000,
            next_aux: 150_000,
            landing: VecDeque::new(),
        }
    }

    fn run_until(&mut self, limit: Us, side: &mut Side, load: f64) {
        loop {
            let landing = self.landing.front().map(|l| l.0);
            let t = [
                Some(self.next_grid),
                Some(self.next_pv),
                Some(self.next_aux),
                landing,
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(limit);
            if t >= limit {
                return;
            }
            let at = self.clock.at(t);
            let key = t / 1000;
            if landing == Some(t) {
                if let Some((_, setting)) = self.landing.pop_front() {
                    side.wrote(t, setting, load);
                }
                continue;
            }
            if t == self.next_pv {
                self.next_pv += ORIGINAL_PV_US;
                self.inputs.pv = Some(Reading::new(side.plant.pv + keyed_noise(key, 3, 3.0), at));
                continue;
            }
            if t == self.next_grid {
                self.next_grid += ORIGINAL_GRID_US;
                let grid = load - side.plant.pv + keyed_noise(key, 2, 10.0);
                self.inputs.grid = Some(Reading::new(grid, at));
                self.inputs.consumption = Some(Reading::new(CONSUMPTION_START_KWH, at));
            } else {
                self.next_aux += ORIGINAL_AUX_US;
            }
            let decision = decide(&self.inputs, &site_settings(), at);
            if let Some(setting) = self.smoother.on_event(&decision) {
                self.landing.push_back((t + write_us(), setting));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Run

struct Outcome {
    floor: Tally,
    no_limiter: Tally,
    /// The original at its own pace.
    original: Side,
    /// The original's policy on the paced bus.
    original_paced: Side,
    daemon: Side,
    daemon_bus: Daemon,
}

fn run(config: &Config, house: &House) -> Outcome {
    let (load0, available0) = (house.load[0], house.available[0]);
    let mut floor = Plant::new(config, load0.min(available0));
    let mut floor_tally = Tally::default();
    let mut no_limiter = Plant::new(config, available0);
    let mut no_limiter_tally = Tally::default();
    let mut original_side = Side::new(config, "original", available0);
    let mut paced_side = Side::new(config, "orig-paced", available0);
    let mut daemon_side = Side::new(config, "daemon", available0);
    let mut original = Original::new();
    let mut original_paced = Daemon::new(config, true);
    let mut daemon = Daemon::new(config, false);
    for k in 0..house.len() {
        let t = k as Us * DT_US;
        let (load, available) = (house.load[k], house.available[k]);
        floor.command(t, load);
        let hob_on = HOB_S.contains(&secs(t));
        for (plant, tally) in [
            (&mut floor, &mut floor_tally),
            (&mut no_limiter, &mut no_limiter_tally),
            (&mut original_side.plant, &mut original_side.tally),
            (&mut paced_side.plant, &mut paced_side.tally),
            (&mut daemon_side.plant, &mut daemon_side.tally),
        ] {
            plant.step(t, available);
            if t >= WARM_UP_US {
                tally.add(load, available, plant.pv, hob_on);
            }
        }
        original.run_until(t + DT_US, &mut original_side, load);
        original_paced.run_until(t + DT_US, &mut paced_side, load);
        daemon.run_until(t + DT_US, &mut daemon_side, load);
    }
    Outcome {
        floor: floor_tally,
        no_limiter: no_limiter_tally,
        original: original_side,
        original_paced: paced_side,
        daemon: daemon_side,
        daemon_bus: daemon,
    }
}

// ---------------------------------------------------------------------------------------------
// Figures

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted.get(rank - 1).copied()
}

struct Latency {
    /// Per event that needed a write: seconds to it, `INFINITY` when none came in the window.
    seconds: Vec<f64>,
}

impl Latency {
    /// Nearest-rank median over every event that needed a write, a missing write counting as
    /// infinitely late.
    fn median(&self) -> f64 {
        percentile(&self.seconds, 50.0).unwrap_or(f64::NAN)
    }

    fn show(&self) -> String {
        let n = self.seconds.len();
        let late: Vec<f64> = self
            .seconds
            .iter()
            .copied()
            .filter(|s| s.is_finite())
            .collect();
        let missed = n - late.len();
        let median = self.median();
        if n == 0 {
            "n/a (none needed)".into()
        } else if missed == 0 {
            format!("{median:.2} s (n={n})")
        } else if median.is_finite() {
            format!("{median:.2} s (n={n}, {missed} without a write)")
        } else {
            format!(
                "none (n={n}, {missed} without a write; the others {})",
                percentile(&late, 50.0).map_or("—".into(), |m| format!("{m:.2} s"))
            )
        }
    }
}

/// The setting the inverter was last given before `t`.
fn hr3_at(writes: &[Write], t: Us) -> u16 {
    writes
        .iter()
        .take_while(|w| w.at < t)
        .last()
        .map_or(100, |w| w.value)
}

/// From each event (plant step, and the step whose ideal output it leads to) to the first write
/// that moves the setting the wanted way, within the event's window (until the next load step,
/// at most [`STEP_WINDOW_US`]). Only events that need such a write count: a raise when the
/// setting held is more than [`NEEDED_W`] below the ideal output, a lowering when above it.
fn latencies(house: &House, events: &[(usize, usize)], writes: &[Write], raise: bool) -> Latency {
    let mut seconds = Vec::new();
    for &(k, settled) in events {
        let from = k as Us * DT_US;
        let held = encoding().watts(Setting(hr3_at(writes, from)), RATED_W);
        let settled = settled.min(house.len() - 1);
        let ideal = house.load[settled].min(house.available[settled]);
        let needed = if raise {
            held < ideal - NEEDED_W
        } else {
            held > ideal + NEEDED_W
        };
        if !needed {
            continue;
        }
        let next = house
            .steps
            .iter()
            .map(|&(s, _)| s as Us * DT_US)
            .find(|&s| s > from)
            .unwrap_or(Us::MAX);
        let end = next.min(from + STEP_WINDOW_US);
        let first = writes.iter().find(|w| {
            w.at >= from
                && w.at < end
                && if raise {
                    w.value > w.previous
                } else {
                    w.value < w.previous
                }
        });
        seconds.push(first.map_or(f64::INFINITY, |w| secs(w.at - from)));
    }
    seconds.sort_by(f64::total_cmp);
    Latency { seconds }
}

struct Figures {
    writes_per_h: f64,
    rise: Latency,
    drop: Latency,
    cloud_end: Latency,
    steady_per_min: f64,
}

fn figures(house: &House, writes: &[Write], hours: f64) -> Figures {
    let ups: Vec<(usize, usize)> = house
        .steps
        .iter()
        .filter(|s| s.1)
        .map(|s| (s.0, s.0))
        .collect();
    let downs: Vec<(usize, usize)> = house
        .steps
        .iter()
        .filter(|s| !s.1)
        .map(|s| (s.0, s.0))
        .collect();
    let steady_steps = house.steady.iter().filter(|&&s| s).count();
    let steady_writes = writes
        .iter()
        .filter(|w| {
            house
                .steady
                .get((w.at / DT_US) as usize)
                .copied()
                .unwrap_or(false)
        })
        .count();
    let steady_min = steady_steps as f64 * DT / 60.0;
    let counted = writes.iter().filter(|w| w.at >= WARM_UP_US).count();
    Figures {
        writes_per_h: counted as f64 / hours,
        rise: latencies(house, &ups, writes, true),
        drop: latencies(house, &downs, writes, false),
        cloud_end: latencies(house, &house.cloud_ends, writes, true),
        steady_per_min: if steady_min > 0.0 {
            steady_writes as f64 / steady_min
        } else {
            f64::NAN
        },
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b.abs() < 1e-9 { f64::NAN } else { a / b }
}

fn show_ratio(r: f64) -> String {
    if r.is_finite() {
        format!("{r:.2}")
    } else {
        "—".into()
    }
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

fn report(name: &str, config: &Config, house: &House, o: &Outcome) {
    let hours = secs((house.len() as Us * DT_US).saturating_sub(WARM_UP_US)) / 3600.0;
    let (hob_low, hob_high) = config.hob_period_s;
    let ups = house.steps.iter().filter(|s| s.1).count();
    println!(
        "plant_loop [{name}]: {:.0} s house (seed {:#x}; figures from {:.0} s on), hob period {}, Growatt command interval \
         {} ms, dead time {:.2} s, ramp {:.0} W/s; load steps >= {STEP_THRESHOLD_W:.0} W: {ups} up, \
         {} down; clouds {}; steady load {:.1} min",
        config.secs,
        config.seed,
        secs(WARM_UP_US),
        if hob_high > hob_low {
            format!("{hob_low:.0}-{hob_high:.0} s")
        } else {
            format!("{hob_low:.0} s")
        },
        config.growatt_interval_us / 1000,
        secs(config.dead_time_us),
        config.ramp_w_per_s,
        house.steps.len() - ups,
        house
            .clouds
            .iter()
            .filter(|c| c.start < config.secs)
            .map(|c| format!(
                "{:.0}-{:.0} s down to {:.0} W",
                c.start,
                c.end + c.edge,
                c.level_w
            ))
            .collect::<Vec<_>>()
            .join(", "),
        house.steady.iter().filter(|&&s| s).count() as f64 * DT / 60.0,
    );
    let bus = &o.daemon_bus;
    let mut gaps: Vec<f64> = bus.pv_reads.windows(2).map(|w| secs(w[1] - w[0])).collect();
    gaps.sort_by(f64::total_cmp);
    let span = secs(bus.now).max(1e-9);
    println!(
        "daemon's bus: {:.1} meter reads/s, {:.2} Growatt commands/s, AC power read {:.2}/s \
         (interval p50 {:.2} s, max {:.2} s); no limiter at all: {:.1} Wh exported, {:.1} Wh \
         imported beyond the unavoidable",
        bus.meter_reads as f64 / span,
        bus.growatt_commands as f64 / span,
        bus.pv_reads.len() as f64 / span,
        percentile(&gaps, 50.0).unwrap_or(f64::NAN),
        gaps.last().copied().unwrap_or(f64::NAN),
        o.no_limiter.exported_wh,
        o.no_limiter.import_beyond_wh(),
    );
    let figs = [
        figures(house, &o.original.writes, hours),
        figures(house, &o.original_paced.writes, hours),
        figures(house, &o.daemon.writes, hours),
    ];
    let tallies = [&o.original.tally, &o.original_paced.tally, &o.daemon.tally];
    let ft = &o.floor;
    println!();
    println!(
        "| | plant floor | original (own pace) | original's policy, paced bus | daemon (paced bus) \
         | daemon / original | daemon / original's policy paced |"
    );
    println!("|---|---|---|---|---|---|---|");
    // One row: the floor's figure (if any), the three controllers', the two ratios.
    let row = |what: &str, floor: Option<String>, cells: [String; 3], values: [f64; 3]| {
        println!(
            "| {what} | {} | {} | {} | {} | {} | {} |",
            floor.unwrap_or_else(|| "—".into()),
            cells[0],
            cells[1],
            cells[2],
            show_ratio(ratio(values[2], values[0])),
            show_ratio(ratio(values[2], values[1])),
        );
    };
    let energy = |what: &str, floor: f64, get: &dyn Fn(&Tally) -> f64, digits: usize| {
        let values = tallies.map(get);
        row(
            what,
            Some(format!("{floor:.digits$}")),
            values.map(|v| format!("{v:.digits$}")),
            values,
        );
    };
    energy(
        "energy exported (Wh)",
        ft.exported_wh,
        &|t| t.exported_wh,
        1,
    );
    energy(
        "energy imported beyond the unavoidable (Wh)",
        ft.import_beyond_wh(),
        &|t| t.import_beyond_wh(),
        1,
    );
    energy(
        "… of which while the hob pulses (Wh)",
        ft.import_beyond_hob_wh,
        &|t| t.import_beyond_hob_wh,
        1,
    );
    energy(
        "PV curtailed beyond the necessary (Wh)",
        ft.curtailed_beyond_wh,
        &|t| t.curtailed_beyond_wh,
        1,
    );
    let per_h = figs.each_ref().map(|f| f.writes_per_h);
    row(
        &format!("HR3 writes in {:.0} s (per hour)", hours * 3600.0),
        None,
        per_h.map(|w| format!("{:.0} ({w:.0})", w * hours)),
        per_h,
    );
    energy(
        "largest export (W)",
        ft.largest_export_w,
        &|t| t.largest_export_w,
        0,
    );
    energy(
        &format!("longest export above {EXPORT_RUN_W:.0} W (s)"),
        ft.longest_export_s,
        &|t| t.longest_export_s,
        2,
    );
    let latency = |what: &str, get: &dyn Fn(&Figures) -> &Latency| {
        let l = figs.each_ref().map(get);
        row(what, None, l.map(Latency::show), l.map(Latency::median));
    };
    latency("load rise → first raise write, median", &|f| &f.rise);
    latency("load drop → first lowering write, median", &|f| &f.drop);
    latency("cloud end → first raise write, median", &|f| &f.cloud_end);
    let steady = figs.each_ref().map(|f| f.steady_per_min);
    row(
        "steady load: writes per minute",
        None,
        steady.map(|w| format!("{w:.2}")),
        steady,
    );
    let g100 = |t: &Tally| {
        if t.largest_export_w > EXPORT_LIMIT_W {
            "EXCEEDED".to_string()
        } else {
            "never exceeded".to_string()
        }
    };
    println!(
        "| G100 export limit {EXPORT_LIMIT_W:.0} W | {} | {} | {} | {} | | |",
        g100(ft),
        g100(tallies[0]),
        g100(tallies[1]),
        g100(tallies[2])
    );
    println!();
    let (ot, pt, dt) = (tallies[0], tallies[1], tallies[2]);
    let ours = &figs[2];
    println!(
        "| issue 14 target | daemon against the original (own pace) | | against the original's \
         policy on the paced bus | |"
    );
    println!("|---|---|---|---|---|");
    let target = |what: &str, a: f64, b: f64, ok: &dyn Fn(f64) -> bool| {
        println!(
            "| {what} | {a:.2} | {} | {b:.2} | {} |",
            met(ok(a)),
            met(ok(b))
        );
    };
    target(
        "imported beyond the unavoidable ≤ 1/2 of the original's",
        ratio(dt.import_beyond_wh(), ot.import_beyond_wh()),
        ratio(dt.import_beyond_wh(), pt.import_beyond_wh()),
        &|r| r <= 0.5,
    );
    target(
        "exported ≤ the original's",
        ratio(dt.exported_wh, ot.exported_wh),
        ratio(dt.exported_wh, pt.exported_wh),
        &|r| r <= 1.0,
    );
    target(
        "HR3 writes ≤ 1/5 of the original's",
        ratio(per_h[2], per_h[0]),
        ratio(per_h[2], per_h[1]),
        &|r| r <= 0.2,
    );
    let raise = ours.rise.median();
    println!(
        "| load rise → first raise write, median ≤ 0.5 s | {} | {} | | |",
        ours.rise.show(),
        met(raise <= 0.5)
    );
    println!(
        "| steady load ≤ 1 write/min | {:.2} | {} | | |",
        ours.steady_per_min,
        met(ours.steady_per_min <= 1.0)
    );
    println!(
        "| G100 export limit never exceeded | largest export {:.0} W | {} | | |",
        dt.largest_export_w,
        met(dt.largest_export_w <= EXPORT_LIMIT_W)
    );
    println!();
}
