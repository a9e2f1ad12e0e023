//! Bus time of the SDM230 fast group read (input 0x0000..0x000D, 14 registers) against the
//! simulator with realistic timing at 9600 8N1 and a 10 ms turnaround, next to the theory:
//! 8 + 33 bytes of wire time + 2 × 3.5 characters of silence + turnaround.
//! `cargo bench --bench rtu_bus_time [-- --bench --reads N]`; without `--bench`: 5 reads.

use std::time::{Duration, Instant};

use dbus_modbus_client::modbus::{ReadFunction, RtuMaster, SerialSettings};
use modbus_sim::{SimConfig, Simulator};
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
    // The simulator's line defaults to the same 9600 8N1.
    let sim = Simulator::start(SimConfig {
        realistic: true,
        turnaround: TURNAROUND,
        ..SimConfig::default()
    })
    .expect("simulator");
    let mut master = RtuMaster::open(sim.tty_path(), settings).expect("open pty");

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
    let theory = settings.wire_time(8 + 33) + settings.frame_silence() * 2 + TURNAROUND;
    let stats = master.stats(METER);
    let median = percentile(&times, 50.0).unwrap_or_default();
    let p95 = percentile(&times, 95.0).unwrap_or_default();
    println!(
        "rtu_bus_time: {} reads of SDM230 0x0000..0x000D (14 input regs), 9600 8N1, turnaround {} ms",
        times.len(),
        TURNAROUND.as_millis()
    );
    println!(
        "  theoretical {:.1} ms (wire 41 B {:.1} ms + 2 x 3.5 chars {:.1} ms + turnaround {:.1} ms)",
        ms(theory),
        ms(settings.wire_time(41)),
        ms(settings.frame_silence() * 2),
        ms(TURNAROUND)
    );
    println!(
        "  achieved per read: median {:.1} ms (ratio {:.3}), p95 {:.1} ms (ratio {:.3}), max {:.1} ms",
        ms(median),
        median.as_secs_f64() / theory.as_secs_f64(),
        ms(p95),
        p95.as_secs_f64() / theory.as_secs_f64(),
        ms(*times.last().unwrap_or(&Duration::ZERO))
    );
    // Back to back, the silence after one reply is the silence before the next request.
    let back_to_back = theory - settings.frame_silence();
    println!(
        "  back-to-back theory (one silence per read) {:.1} ms: median ratio {:.3}",
        ms(back_to_back),
        median.as_secs_f64() / back_to_back.as_secs_f64()
    );
    println!(
        "  master counters: bus time/read {:.1} ms, errors {errors}, timeout now {:.0} ms",
        ms(stats.bus_time) / reads.max(1) as f64,
        ms(master.current_timeout(METER, 8, 33))
    );
    assert_eq!(errors, 0, "reads failed");
}
