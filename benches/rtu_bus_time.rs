//! Bus time of the SDM230 fast group read (input 0x0000..0x000D, 14 registers) against the
//! simulator with realistic timing at 9600 8N1 and a 10 ms turnaround, next to the theory:
//! 8 + 33 bytes of wire time + 2 × 3.5 characters of silence + turnaround; then again with the
//! SDM230's documented 60 ms silence before each request, against a meter that enforces it.
//! `cargo bench --bench rtu_bus_time [-- --bench --reads N]`; without `--bench`: 5 reads.

use std::time::{Duration, Instant};

use dbus_modbus_client::devices::SDM230_BUS;
use dbus_modbus_client::modbus::{ReadFunction, RtuMaster, SerialSettings, UnitPacing};
use modbus_sim::{MeterSilence, SimConfig, Simulator};
use testkit::percentile;

const METER: u8 = 2;
const TURNAROUND: Duration = Duration::from_millis(10);

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let reads: usize = args
        .iter()
        .position(|a| a == "--reads")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(if full { 500 } else { 5 });
    let settings = SerialSettings::default();
    println!(
        "rtu_bus_time: {reads} reads of SDM230 0x0000..0x000D (14 input regs), 9600 8N1, turnaround {} ms",
        TURNAROUND.as_millis()
    );

    // The framing alone: the simulated meter answers whatever comes after 3.5 characters.
    let framing = bus_time(reads, MeterSilence::Never, UnitPacing::default());
    let theory = settings.wire_time(8 + 33) + settings.frame_silence() * 2 + TURNAROUND;
    println!(
        "  framing only (the simulated meter's 60 ms rule off, no unit pacing):\n    theoretical {:.1} ms (wire 41 B {:.1} ms + 2 x 3.5 chars {:.1} ms + turnaround {:.1} ms)",
        ms(theory),
        ms(settings.wire_time(41)),
        ms(settings.frame_silence() * 2),
        ms(TURNAROUND)
    );
    framing.print(theory);
    // Back to back, the silence after one reply is the silence before the next request.
    let back_to_back = theory - settings.frame_silence();
    println!(
        "    back-to-back theory (one silence per read) {:.1} ms: median ratio {:.3}",
        ms(back_to_back),
        framing.median.as_secs_f64() / back_to_back.as_secs_f64()
    );

    // As the daemon runs it: the SDM230's documented 60 ms silence before each request, against
    // a simulated meter that ignores a request sent sooner (a master without the pacing fails
    // about every other read here).
    let pacing = UnitPacing {
        silence: SDM230_BUS.silence_before_request,
        interval: SDM230_BUS.min_command_interval,
    };
    let paced = bus_time(reads, MeterSilence::Always, pacing);
    let paced_theory = pacing.silence + settings.wire_time(8 + 33) + TURNAROUND;
    println!(
        "  with the SDM230's pace (60 ms silence before each request, the simulated meter enforcing it):\n    back-to-back theory {:.1} ms (60 ms + wire 41 B {:.1} ms + turnaround {:.1} ms)",
        ms(paced_theory),
        ms(settings.wire_time(41)),
        ms(TURNAROUND)
    );
    paced.print(paced_theory);
    assert_eq!(framing.errors, 0, "reads failed on the framing-only pass");
    assert_eq!(paced.errors, 0, "reads failed with the meter's pace");
}

struct Pass {
    median: Duration,
    p95: Duration,
    max: Duration,
    reads: usize,
    errors: usize,
    bus_time_per_read: Duration,
    timeout_now: Duration,
}

impl Pass {
    fn print(&self, theory: Duration) {
        let ratio = |d: Duration| d.as_secs_f64() / theory.as_secs_f64();
        println!(
            "    achieved per read: median {:.1} ms (ratio {:.3}), p95 {:.1} ms (ratio {:.3}), max {:.1} ms",
            ms(self.median),
            ratio(self.median),
            ms(self.p95),
            ratio(self.p95),
            ms(self.max)
        );
        println!(
            "    master counters: bus time/read {:.1} ms, errors {} of {}, timeout now {:.0} ms",
            ms(self.bus_time_per_read),
            self.errors,
            self.reads,
            ms(self.timeout_now)
        );
    }
}

/// `reads` back-to-back reads of the meter's fast group on a fresh simulator and master.
fn bus_time(reads: usize, meter_silence: MeterSilence, pacing: UnitPacing) -> Pass {
    // The simulator's line defaults to the same 9600 8N1.
    let sim = Simulator::start(SimConfig {
        realistic: true,
        turnaround: TURNAROUND,
        meter_silence,
        ..SimConfig::default()
    })
    .expect("simulator");
    let mut master = RtuMaster::open(sim.tty_path(), SerialSettings::default()).expect("open pty");
    master.set_pacing(METER, pacing);

    let mut out = [0u16; 14];
    let mut times = Vec::with_capacity(reads);
    let mut errors = 0;
    for _ in 0..reads {
        let t = Instant::now();
        match master.read_registers(METER, ReadFunction::Input, 0x0000, &mut out) {
            Ok(()) => times.push(t.elapsed()),
            Err(_) => errors += 1,
        }
    }
    assert!(!times.is_empty(), "every read failed ({errors} errors)");
    times.sort();
    Pass {
        median: percentile(&times, 50.0).unwrap_or_default(),
        p95: percentile(&times, 95.0).unwrap_or_default(),
        max: times.last().copied().unwrap_or_default(),
        reads,
        errors,
        bus_time_per_read: master.stats(METER).bus_time / reads.max(1) as u32,
        timeout_now: master.current_timeout(METER, 8, 33),
    }
}
