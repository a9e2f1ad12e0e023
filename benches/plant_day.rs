//! Plant-day benchmark: the limiter in closed loop with a simulated house, PV array, Growatt,
//! battery and MultiPlus over a day, the daemon's controller (`limiter::Controller`, the same
//! step the daemon takes on each meter reading, with the Growatt's own strategy) and the original
//! per-event smoothing side by side on identical traces, against an ideal zero-export controller.
//!
//! `cargo bench --bench plant_day` simulates 24 h; without `--bench` (under
//! `cargo test --all-targets`) it simulates 10 minutes around noon as a smoke pass.
//! `-- --trace` prints every HR3 write with the plant state to stderr.
//!
//! The plant model is pure and deterministic (fixed seed, noise from a hash of the step index so
//! every controller sees the same house). Assumptions (none of these were measured on the site):
//! - step 50 ms; meter read every 250 ms; an HR3 write lands 50 ms after the decision (≈17 ms
//!   wire at 9600 baud + turnaround, rounded up to one step);
//! - inverter: AC = min(available, HR3 % × rated), following a new limit at 1000 W/s up and
//!   2000 W/s down; clouds act at once;
//! - MultiPlus (ESS, grid set-point 0 W): first-order lag τ = 0.8 s towards `pv − load`, within
//!   the battery's charge/discharge limits; battery 9.6 kWh, 3 kW limits, charge tapering to 0
//!   between 90 % and 100 % SoC, 93 % one-way efficiency, voltage 49 + 5.5·SoC + 0.0004·P V;
//! - vebus state: 3 bulk / 4 absorption (SoC ≥ 95 %) while charging, 5 float when idle and full,
//!   9 inverting while discharging; battery and vebus values arrive every 1 s (D-Bus signals);
//! - site configured as the users' (energyDifference set, offset −50 kWh, derate on), so §1
//!   rule 5 (limiting) applies whenever rule 4 (charging below 90 % SoC) does not.

use std::time::{Duration, Instant};

use dbus_modbus_client::devices::growatt_limit_encoding;
use dbus_modbus_client::limiter::{
    BatteryReadings, Controller, Inputs, PlantModel, Reading, ReferenceSmoother, Settings, Status,
    decide,
};
use testkit::{SplitMix, keyed_noise};

const DT: f64 = 0.05;
const STEPS_PER_SECOND: u64 = 20;
const RATED_W: f64 = 4200.0;
const EXPORT_LIMIT_W: f64 = 3680.0;
const DC_PEAK_W: f64 = 4600.0;
const INVERTER_EFFICIENCY: f64 = 0.97;
const RAMP_UP_W_PER_S: f64 = 1000.0;
const RAMP_DOWN_W_PER_S: f64 = 2000.0;
const MULTI_TAU_S: f64 = 0.8;
const BATTERY_WH: f64 = 9600.0;
const BATTERY_LIMIT_W: f64 = 3000.0;
const BATTERY_EFFICIENCY: f64 = 0.93;
const MIN_SOC: f64 = 0.10;
const ENERGY_DIFFERENCE_KWH: i64 = 4050;
const CONSUMPTION_START_KWH: f64 = 4000.0;
/// A change of the appliance load at least this large counts as a load step.
const STEP_THRESHOLD_W: f64 = 200.0;
/// Writes within this long after a step (or until the next step) belong to it.
const STEP_WINDOW_S: f64 = 30.0;
const SEED: u64 = 0x5eed_2026;

// Sensor schedules in steps: (period, phase).
const METER: (u64, u64) = (5, 2);
const BATTERY: (u64, u64) = (20, 6);
const ENERGY: (u64, u64) = (300, 4);
const WRITE_DELAY_STEPS: u64 = 1;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let scenario = if full {
        Scenario {
            name: "24 h",
            start_s: 0.0,
            end_s: 86_400.0,
            soc0: 0.55,
        }
    } else {
        Scenario {
            name: "smoke, 12:00-12:10",
            start_s: 12.0 * 3600.0,
            end_s: 12.0 * 3600.0 + 600.0,
            soc0: 0.93,
        }
    };
    let started = Instant::now();
    let report = run(&scenario);
    print_report(&scenario, &report);
    println!(
        "(simulated {:.0} s in {:.2} s wall time)",
        scenario.end_s - scenario.start_s,
        started.elapsed().as_secs_f64()
    );
}

struct Scenario {
    name: &'static str,
    start_s: f64,
    end_s: f64,
    soc0: f64,
}

fn step_of(seconds: f64) -> u64 {
    (seconds / DT).round().max(0.0) as u64
}

// ---------------------------------------------------------------------------------------------
// House load

/// Appliance load as a sorted list of (step, change in W), plus a noisy base load.
struct LoadTrace {
    changes: Vec<(u64, f64)>,
    cursor: usize,
    appliances_w: f64,
}

impl LoadTrace {
    fn new(rng: &mut SplitMix) -> Self {
        let mut intervals: Vec<(f64, f64, f64)> = Vec::new(); // (start s, duration s, W)
        let h = 3600.0;
        // Fridge: 100 W compressor, 18 min on in every 50 min.
        let mut t = rng.uniform(0.0, 3000.0);
        while t < 24.0 * h {
            intervals.push((t, 18.0 * 60.0 + rng.uniform(-60.0, 60.0), 100.0));
            t += 50.0 * 60.0 + rng.uniform(-120.0, 120.0);
        }
        // Kettle, 3 kW for 3 min; one fixed at 12:03 so the smoke window has a big step.
        intervals.push((12.0 * h + 180.0, 180.0, 3000.0));
        for at in [7.2, 10.5, 13.5, 15.75, 17.3, 20.5] {
            intervals.push((at * h + rng.uniform(-1200.0, 1200.0), 180.0, 3000.0));
        }
        // Oven, 2 kW: 10 min heat-up, then the thermostat cycles 2 min on / 2.5 min off.
        for (from, to) in [(11.9, 12.6), (17.75, 18.75)] {
            let mut t = from * h + rng.uniform(-60.0, 60.0);
            intervals.push((t, 600.0, 2000.0));
            t += 600.0 + 150.0;
            while t < to * h {
                let on = 120.0 + rng.uniform(-20.0, 20.0);
                intervals.push((t, on, 2000.0));
                t += on + 150.0 + rng.uniform(-30.0, 30.0);
            }
        }
        // Washing machine: heater, then motor, then spin.
        let wash = 10.0 * h + rng.uniform(0.0, 3600.0);
        intervals.push((wash, 900.0, 2000.0));
        intervals.push((wash + 900.0, 3000.0, 250.0));
        intervals.push((wash + 3900.0, 600.0, 500.0));
        // Dishwasher heater, microwave, TV, lights.
        intervals.push((19.5 * h + rng.uniform(0.0, 1800.0), 1200.0, 1800.0));
        for at in [8.0, 13.2] {
            intervals.push((at * h + rng.uniform(-600.0, 600.0), 180.0, 1200.0));
        }
        intervals.push((19.0 * h, 3.5 * h, 120.0));
        intervals.push((20.5 * h, 2.5 * h, 150.0));

        let mut changes: Vec<(u64, f64)> = intervals
            .iter()
            .flat_map(|&(start, duration, w)| {
                [(step_of(start), w), (step_of(start + duration), -w)]
            })
            .collect();
        changes.sort_by_key(|c| c.0);
        Self {
            changes,
            cursor: 0,
            appliances_w: 0.0,
        }
    }

    /// Appliance load at step `k` (steps must not go backwards).
    fn appliances_at(&mut self, k: u64) -> f64 {
        while let Some(&(at, delta)) = self.changes.get(self.cursor) {
            if at > k {
                break;
            }
            self.appliances_w += delta;
            self.cursor += 1;
        }
        self.appliances_w.max(0.0)
    }
}

/// Base load: 180 W with a slow swell and per-second noise (below the step threshold).
fn base_load(k: u64) -> f64 {
    let t = k as f64 * DT;
    180.0
        + 60.0 * (t / 86_400.0 * std::f64::consts::TAU * 3.0).sin().abs()
        + keyed_noise(k / STEPS_PER_SECOND, 1, 25.0)
}

// ---------------------------------------------------------------------------------------------
// PV

struct Cloud {
    start: f64,
    end: f64,
    edge: f64,
    depth: f64,
}

struct Sky {
    clouds: Vec<Cloud>,
}

impl Sky {
    /// Passing clouds between 10:00 and 17:00: 20 s–4 min long, 5–20 s edges, 25–60 % left.
    fn new(rng: &mut SplitMix) -> Self {
        let mut clouds = Vec::new();
        let mut t = 10.0 * 3600.0;
        while t < 17.0 * 3600.0 {
            t += -480.0 * (1.0 - rng.uniform(0.0, 0.999)).ln();
            let length = rng.uniform(20.0, 240.0);
            clouds.push(Cloud {
                start: t,
                end: t + length,
                edge: rng.uniform(5.0, 20.0),
                depth: rng.uniform(0.25, 0.6),
            });
            t += length;
        }
        Self { clouds }
    }

    fn factor(&self, t: f64) -> f64 {
        self.clouds
            .iter()
            .filter(|c| t > c.start && t < c.end + c.edge)
            .map(|c| {
                let into = ((t - c.start) / c.edge).min(1.0);
                let out = if t > c.end {
                    1.0 - (t - c.end) / c.edge
                } else {
                    1.0
                };
                1.0 - (1.0 - c.depth) * into.min(out).max(0.0)
            })
            .fold(1.0, f64::min)
    }

    /// AC power the inverter could produce at `t` (s since midnight): a clear-day bell from
    /// 05:00 to 21:00 (UK summer), peak 4.6 kW DC, clipped at the rated 4.2 kW AC.
    fn available_ac(&self, t: f64) -> f64 {
        let (rise, set) = (5.0 * 3600.0, 21.0 * 3600.0);
        if t <= rise || t >= set {
            return 0.0;
        }
        let dc = DC_PEAK_W
            * (std::f64::consts::PI * (t - rise) / (set - rise))
                .sin()
                .powi(3);
        (dc * self.factor(t) * INVERTER_EFFICIENCY).min(RATED_W)
    }
}

// ---------------------------------------------------------------------------------------------
// Battery, MultiPlus, inverter

fn charge_limit(soc: f64) -> f64 {
    if soc < 0.9 {
        BATTERY_LIMIT_W
    } else {
        (BATTERY_LIMIT_W * (1.0 - soc) / 0.1).max(0.0)
    }
}

fn discharge_limit(soc: f64) -> f64 {
    if soc > MIN_SOC { BATTERY_LIMIT_W } else { 0.0 }
}

/// Battery DC power (+ charging) for the MultiPlus AC input power (+ drawn in).
fn battery_dc(multi_in: f64) -> f64 {
    if multi_in > 0.0 {
        multi_in * BATTERY_EFFICIENCY
    } else {
        multi_in / BATTERY_EFFICIENCY
    }
}

#[derive(Default)]
struct Energy {
    exported_wh: f64,
    imported_wh: f64,
    exported_limiting_wh: f64,
    produced_wh: f64,
    available_wh: f64,
}

impl Energy {
    fn add(&mut self, grid: f64, pv: f64, available: f64, limiting: bool) {
        let wh = DT / 3600.0;
        if grid < 0.0 {
            self.exported_wh -= grid * wh;
            if limiting {
                self.exported_limiting_wh -= grid * wh;
            }
        } else {
            self.imported_wh += grid * wh;
        }
        self.produced_wh += pv * wh;
        self.available_wh += available * wh;
    }

    fn curtailed_wh(&self) -> f64 {
        self.available_wh - self.produced_wh
    }
}

struct Plant {
    soc: f64,
    pv: f64,
    multi_in: f64,
    grid: f64,
    hr3: u16,
    consumption_kwh: f64,
}

impl Plant {
    fn new(soc: f64) -> Self {
        Self {
            soc,
            pv: 0.0,
            multi_in: 0.0,
            grid: 0.0,
            hr3: 100,
            consumption_kwh: CONSUMPTION_START_KWH,
        }
    }

    fn step(&mut self, load: f64, available: f64) {
        let cap = (f64::from(self.hr3) * RATED_W / 100.0).min(available);
        self.pv = if cap > self.pv {
            (self.pv + RAMP_UP_W_PER_S * DT).min(cap)
        } else {
            (self.pv - RAMP_DOWN_W_PER_S * DT).max(cap)
        };
        let set_point = (self.pv - load).clamp(-discharge_limit(self.soc), charge_limit(self.soc));
        self.multi_in += (set_point - self.multi_in) * (1.0 - (-DT / MULTI_TAU_S).exp());
        self.soc =
            (self.soc + battery_dc(self.multi_in) * DT / 3600.0 / BATTERY_WH).clamp(0.0, 1.0);
        self.grid = load + self.multi_in - self.pv;
        self.consumption_kwh += self.grid * DT / 3_600_000.0;
    }

    fn battery_power(&self) -> f64 {
        battery_dc(self.multi_in)
    }

    fn battery_voltage(&self) -> f64 {
        49.0 + 5.5 * self.soc + 0.0004 * self.battery_power()
    }

    /// What the battery and the MultiPlus report on D-Bus.
    fn battery_readings(&self, now: Instant) -> BatteryReadings {
        let reading = |v: f64| Some(Reading::new(v, now));
        let state = self.vebus_state();
        BatteryReadings {
            power: reading(self.battery_power()),
            voltage: reading(self.battery_voltage()),
            soc: reading((self.soc * 1000.0).round() / 10.0),
            multi_in: reading(self.multi_in),
            vebus_state: reading(state),
            led_bulk: reading(if state == 3.0 { 1.0 } else { 0.0 }),
            led_absorption: reading(if state == 4.0 { 1.0 } else { 0.0 }),
        }
    }

    fn vebus_state(&self) -> f64 {
        let p = self.battery_power();
        if p > 20.0 {
            if self.soc >= 0.95 { 4.0 } else { 3.0 }
        } else if p < -20.0 {
            9.0
        } else {
            5.0
        }
    }
}

/// Zero export with battery priority and perfect, instant knowledge: PV = min(available,
/// load + what the battery can take); the MultiPlus follows at once.
struct IdealPlant {
    soc: f64,
    energy: Energy,
}

impl IdealPlant {
    fn step(&mut self, load: f64, available: f64) {
        let pv = available.min((load + charge_limit(self.soc)).max(0.0));
        let multi_in = (pv - load).clamp(-discharge_limit(self.soc), charge_limit(self.soc));
        self.soc = (self.soc + battery_dc(multi_in) * DT / 3600.0 / BATTERY_WH).clamp(0.0, 1.0);
        self.energy.add(load + multi_in - pv, pv, available, false);
    }
}

// ---------------------------------------------------------------------------------------------
// Controllers

enum Policy {
    /// The daemon's controller: one step per meter reading.
    Daemon(Box<Controller>),
    /// The original's smoothing, one decision per event, on its own copy of the inputs.
    Reference {
        smoother: ReferenceSmoother,
        inputs: Box<Inputs>,
    },
}

/// One controller in closed loop with its own copy of the plant.
struct ClosedLoop {
    name: &'static str,
    policy: Policy,
    /// PV power is read every this many steps (the Growatt shares the bus with the meter).
    pv_period: u64,
    plant: Plant,
    status: Status,
    pending_write: Option<(u64, u16)>,
    write_steps: Vec<u64>,
    energy: Energy,
    limiting_s: f64,
    /// Print every write to stderr (`-- --trace`).
    trace: bool,
}

impl ClosedLoop {
    fn new(name: &'static str, policy: Policy, pv_period: u64, soc0: f64) -> Self {
        Self {
            name,
            policy,
            pv_period,
            plant: Plant::new(soc0),
            status: Status::PvOffline,
            pending_write: None,
            write_steps: Vec::new(),
            energy: Energy::default(),
            limiting_s: 0.0,
            trace: std::env::args().any(|a| a == "--trace"),
        }
    }

    fn daemon(name: &'static str, pv_period: u64, soc0: f64) -> Self {
        let mut controller = Controller::new(site_settings());
        controller.attach_inverter(growatt_limit_encoding());
        if std::env::var("PLANT_DAY_MATCHED_MODEL").is_ok() {
            controller.set_plant_model(PlantModel {
                dead_time: Duration::from_millis(50),
                ramp_up_w_per_s: RAMP_UP_W_PER_S,
                ramp_down_w_per_s: RAMP_DOWN_W_PER_S,
                ..PlantModel::default()
            });
        }
        Self::new(name, Policy::Daemon(Box::new(controller)), pv_period, soc0)
    }

    fn reference(name: &'static str, pv_period: u64, soc0: f64) -> Self {
        let policy = Policy::Reference {
            smoother: ReferenceSmoother::new(RATED_W, growatt_limit_encoding()),
            inputs: Box::default(),
        };
        Self::new(name, policy, pv_period, soc0)
    }

    fn writes(&self) -> u64 {
        match &self.policy {
            Policy::Daemon(c) => c.writes(),
            Policy::Reference { smoother, .. } => smoother.writes(),
        }
    }

    fn step(&mut self, k: u64, load: f64, available: f64, clock: &Clock) {
        if let Some((at, value)) = self.pending_write
            && at <= k
        {
            self.plant.hr3 = value;
            self.write_steps.push(k);
            if self.trace {
                let p = &self.plant;
                eprintln!(
                    "{:<34} {:>9.2} s HR3={value:>3} load={load:>5.0} grid={:>6.0} pv={:>5.0} \
                     multi_in={:>6.0} soc={:.3} {:?}",
                    self.name,
                    k as f64 * DT,
                    p.grid,
                    p.pv,
                    p.multi_in,
                    p.soc,
                    self.status
                );
            }
            self.pending_write = None;
        }
        self.plant.step(load, available);
        let limiting = self.status == Status::Limiting;
        self.energy
            .add(self.plant.grid, self.plant.pv, available, limiting);
        if limiting {
            self.limiting_s += DT;
        }

        // This step's sensor readings, on their schedules.
        let now = clock.at(k);
        let due = |(period, phase): (u64, u64)| k % period == phase;
        let reading = |v: f64| Reading::new(v, now);
        let grid = due(METER).then(|| reading(self.plant.grid + keyed_noise(k, 2, 10.0)));
        let pv = due((self.pv_period, 1)).then(|| reading(self.plant.pv + keyed_noise(k, 3, 3.0)));
        let battery = due(BATTERY).then(|| self.plant.battery_readings(now));
        let consumption = due(ENERGY).then(|| reading(self.plant.consumption_kwh));

        let mut write = None;
        match &mut self.policy {
            Policy::Daemon(c) => {
                if let Some(r) = pv {
                    c.on_pv(r);
                }
                if let Some(b) = battery {
                    c.on_battery(b);
                }
                if let Some(r) = consumption {
                    c.on_consumption(r);
                }
                if let Some(r) = grid {
                    c.on_grid(r);
                    write = c.step(now, true);
                    self.status = c.decision().status;
                    if let Some(v) = write {
                        c.written(v, true, now);
                    }
                }
            }
            Policy::Reference { smoother, inputs } => {
                inputs.grid = grid.or(inputs.grid);
                inputs.pv = pv.or(inputs.pv);
                inputs.battery = battery.unwrap_or(inputs.battery);
                inputs.consumption = consumption.or(inputs.consumption);
                // The original decided on every D-Bus signal; it saw battery power, voltage
                // and vebus power as separate signals.
                let events = usize::from(grid.is_some())
                    + usize::from(pv.is_some())
                    + 3 * usize::from(battery.is_some())
                    + usize::from(consumption.is_some());
                for _ in 0..events {
                    let decision = decide(inputs, &site_settings(), now);
                    self.status = decision.status;
                    if let Some(v) = smoother.on_event(&decision) {
                        write = Some(v);
                    }
                }
            }
        }
        if let Some(v) = write {
            self.pending_write = Some((k + WRITE_DELAY_STEPS, v.0));
        }
    }
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

/// Simulated time as `Instant`s for the limiter API.
struct Clock {
    base: Instant,
    start_step: u64,
}

impl Clock {
    fn at(&self, k: u64) -> Instant {
        self.base + Duration::from_millis((k - self.start_step) * 50)
    }
}

// ---------------------------------------------------------------------------------------------
// Run and report

struct LoadStep {
    step: u64,
    up: bool,
    /// Per controller: was it limiting when the step happened?
    limiting: Vec<bool>,
}

struct Report {
    controllers: Vec<ClosedLoop>,
    ideal: IdealPlant,
    steps: Vec<LoadStep>,
    hours: f64,
    peak_load_w: f64,
}

fn run(scenario: &Scenario) -> Report {
    let mut rng = SplitMix(SEED);
    let mut trace = LoadTrace::new(&mut rng);
    let sky = Sky::new(&mut rng);
    let soc0 = scenario.soc0;
    let mut controllers = vec![
        ClosedLoop::daemon("new (time-paced, PV read 1 s)", 20, soc0),
        ClosedLoop::daemon("new (time-paced, PV read 0.25 s)", 5, soc0),
        ClosedLoop::reference("original (per-event EMA)", 20, soc0),
    ];
    let mut ideal = IdealPlant {
        soc: soc0,
        energy: Energy::default(),
    };
    let (first, last) = (step_of(scenario.start_s), step_of(scenario.end_s));
    let clock = Clock {
        base: Instant::now(),
        start_step: first,
    };
    let mut steps = Vec::new();
    let mut previous = trace.appliances_at(first);
    let mut peak_load_w: f64 = 0.0;
    for k in first..last {
        let appliances = trace.appliances_at(k);
        let load = appliances + base_load(k);
        peak_load_w = peak_load_w.max(load);
        let available = sky.available_ac(k as f64 * DT);
        if (appliances - previous).abs() >= STEP_THRESHOLD_W {
            steps.push(LoadStep {
                step: k,
                up: appliances > previous,
                limiting: controllers
                    .iter()
                    .map(|c| c.status == Status::Limiting)
                    .collect(),
            });
        }
        previous = appliances;
        for c in &mut controllers {
            c.step(k, load, available, &clock);
        }
        ideal.step(load, available);
    }
    Report {
        controllers,
        ideal,
        steps,
        hours: (scenario.end_s - scenario.start_s) / 3600.0,
        peak_load_w,
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted.get(rank - 1).copied()
}

fn summary(values: &mut [f64], scale: f64, unit: &str) -> String {
    values.sort_by(f64::total_cmp);
    match (
        percentile(values, 50.0),
        percentile(values, 95.0),
        values.last(),
    ) {
        (Some(p50), Some(p95), Some(max)) => format!(
            "{:.0} / {:.0} / {:.0} {unit} (n={})",
            p50 * scale,
            p95 * scale,
            max * scale,
            values.len()
        ),
        _ => "n/a (n=0)".to_string(),
    }
}

struct StepStats {
    steps: usize,
    without_write: usize,
    writes_per_step: Vec<f64>,
    latency_down_s: Vec<f64>,
    latency_up_s: Vec<f64>,
    /// Load steps down: from the first meter reading that shows the step to the write landing.
    meter_latency_down_s: Vec<f64>,
}

fn step_stats(report: &Report, index: usize) -> StepStats {
    let writes = &report.controllers[index].write_steps;
    let window = step_of(STEP_WINDOW_S);
    let mut stats = StepStats {
        steps: 0,
        without_write: 0,
        writes_per_step: Vec::new(),
        latency_down_s: Vec::new(),
        latency_up_s: Vec::new(),
        meter_latency_down_s: Vec::new(),
    };
    for (i, s) in report.steps.iter().enumerate() {
        if !s.limiting.get(index).copied().unwrap_or(false) {
            continue;
        }
        let next = report.steps.get(i + 1).map_or(u64::MAX, |n| n.step);
        let end = next.min(s.step + window);
        let in_window: Vec<u64> = writes
            .iter()
            .copied()
            .filter(|&w| w >= s.step && w < end)
            .collect();
        stats.steps += 1;
        stats.writes_per_step.push(in_window.len() as f64);
        match in_window.first() {
            None => stats.without_write += 1,
            Some(&w) => {
                let latency = (w - s.step) as f64 * DT;
                let first_reading = s.step + (METER.1 + METER.0 - s.step % METER.0) % METER.0;
                if s.up {
                    stats.latency_up_s.push(latency);
                } else {
                    stats.latency_down_s.push(latency);
                    stats
                        .meter_latency_down_s
                        .push(w.saturating_sub(first_reading) as f64 * DT);
                }
            }
        }
    }
    stats
}

fn print_report(scenario: &Scenario, report: &Report) {
    println!(
        "plant_day ({}): {:.2} h, load steps >= {STEP_THRESHOLD_W:.0} W: {}, peak load {:.0} W, \
         seed {SEED:#x}",
        scenario.name,
        report.hours,
        report.steps.len(),
        report.peak_load_w
    );
    let ideal = &report.ideal.energy;
    println!(
        "ideal zero-export controller: exported {:.0} Wh, imported {:.0} Wh, PV {:.0} of {:.0} Wh \
         (curtailed {:.0} Wh), final SoC {:.1} %",
        ideal.exported_wh,
        ideal.imported_wh,
        ideal.produced_wh,
        ideal.available_wh,
        ideal.curtailed_wh(),
        report.ideal.soc * 100.0
    );
    println!();
    println!(
        "| controller | exported Wh (while limiting) | imported Wh | PV curtailed Wh (vs ideal) | \
         limiting h | HR3 writes (/h, /limiting h) | writes per load step p50/p95/max | \
         load step down -> write ms p50/p95/max | load step up -> write ms p50/p95/max | \
         meter step down -> write ms p50/p95/max | steps without write | final SoC |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (index, c) in report.controllers.iter().enumerate() {
        let mut stats = step_stats(report, index);
        let e = &c.energy;
        let limiting_h = c.limiting_s / 3600.0;
        println!(
            "| {} | {:.0} ({:.0}) | {:.0} | {:.0} ({:+.0}) | {:.2} | {} ({:.1}, {:.1}) | {} | {} | {} | {} | {} of {} | {:.1} % |",
            c.name,
            e.exported_wh,
            e.exported_limiting_wh,
            e.imported_wh,
            e.curtailed_wh(),
            e.curtailed_wh() - ideal.curtailed_wh(),
            limiting_h,
            c.writes(),
            c.writes() as f64 / report.hours,
            if limiting_h > 0.0 {
                c.writes() as f64 / limiting_h
            } else {
                0.0
            },
            summary(&mut stats.writes_per_step, 1.0, ""),
            summary(&mut stats.latency_down_s, 1000.0, "ms"),
            summary(&mut stats.latency_up_s, 1000.0, "ms"),
            summary(&mut stats.meter_latency_down_s, 1000.0, "ms"),
            stats.without_write,
            stats.steps,
            c.plant.soc * 100.0
        );
    }
    println!();
    println!(
        "writes per step and latencies count load steps that happened while the controller was \
         limiting; a step's writes are those within {STEP_WINDOW_S:.0} s or until the next step \
         (so they include unrelated writes, e.g. battery-acceptance creep); latency is to the \
         first write in that window, quantised to the {:.0} ms step.",
        DT * 1000.0
    );
}
