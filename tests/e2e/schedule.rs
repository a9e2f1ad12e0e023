//! The bus schedule end to end (issue 13, issue 10 item 6): the real daemon, the simulator with
//! realistic 9600-baud timing on a pty (its SDM230 ignores a request that comes less than 60 ms
//! after its last reply, as Eastron documents), a private bus and the Victron stand-ins.
//! Everything is asserted from the simulator's own request log (its timestamps, taken as the
//! bytes arrive), never from timing in the test: a daemon that ignored a device's pace fails
//! here whatever the machine's load.

use std::time::{Duration, Instant};

use modbus_sim::{METER_SILENCE, Plant, RequestRecord};
use testkit::{INVERTER, METER, Rig, grid_name, pv_name, wait_for};

use crate::EXE;
use crate::limiter::{battery_discharging, vebus_inverting};

/// Generous: how long a status change may take on a loaded machine.
const WAIT: Duration = Duration::from_secs(20);
/// The Growatt's default minimum interval between commands (src/devices/growatt.rs `BUS`).
const GROWATT_INTERVAL: Duration = Duration::from_millis(400);
/// The Growatt's AC block (input 35..41), which carries the limiter's PV reading.
const AC_BLOCK: u16 = 35;
const FN_READ_INPUT: u8 = 4;

fn start(args: &[&str]) -> Rig {
    let plant = Plant {
        load_w: 500.0,
        pv_available_w: 3500.0,
        ramp_w_per_s: 1000.0,
    };
    Rig::start_limiter(EXE, plant, args, &battery_discharging(), &vebus_inverting())
}

/// The daemon's shortest response timeout (src/modbus/master.rs `TIMEOUT_FLOOR`): a reply the
/// simulator sends later than this after the request began may come after the daemon gave up on
/// it (a loaded machine delays the simulator's thread), and the daemon cannot wait out a silence
/// after a reply it never saw.
const LATE_REPLY: Duration = Duration::from_millis(100);

/// Every request to the meter came at least its silence after the meter's previous reply, and
/// none was ignored, except after a late reply (rare). Returns how many requests there were.
fn assert_meter_silence_kept(log: &[RequestRecord]) -> usize {
    let mut last: Option<(Instant, bool)> = None;
    let mut n = 0;
    let mut after_late = 0;
    let meter: Vec<&RequestRecord> = log.iter().filter(|r| r.unit == METER).collect();
    for (i, r) in meter.iter().enumerate() {
        n += 1;
        if let Some((reply, late)) = last {
            let silence = r.at.saturating_duration_since(reply);
            if late {
                after_late += 1;
            } else {
                let context = &meter[i.saturating_sub(3)..=i];
                assert!(!r.ignored, "the meter ignored a request: {context:#?}");
                assert!(
                    silence >= METER_SILENCE,
                    "meter addressed {silence:?} after its last reply: {context:#?}"
                );
            }
        }
        if let Some(reply) = r.replied_at {
            last = Some((reply, reply.saturating_duration_since(r.at) > LATE_REPLY));
        }
    }
    assert!(
        after_late * 20 <= n,
        "{after_late} of {n} meter requests followed a late reply"
    );
    n
}

/// No two commands to the Growatt closer than `interval`. Returns how many there were.
fn assert_growatt_interval_kept(log: &[RequestRecord], interval: Duration) -> usize {
    let growatt: Vec<&RequestRecord> = log.iter().filter(|r| r.unit == INVERTER).collect();
    for pair in growatt.windows(2) {
        let gap = pair[1].at.saturating_duration_since(pair[0].at);
        assert!(
            gap >= interval,
            "two commands to the Growatt {gap:?} apart: {:?}, {:?}",
            pair[0],
            pair[1]
        );
    }
    growatt.len()
}

#[test]
fn while_limiting_the_meter_keeps_its_silence_and_the_growatt_its_interval() {
    let rig = start(&[]);
    let from = Instant::now();
    rig.enable_limiter();
    assert_eq!(
        rig.wait_status("Configured, limiting", WAIT),
        "Configured, limiting"
    );
    // Load steps down and up: urgent lowerings and paced raises, commands too.
    let writes_before = rig.hr3_writes().len();
    for load in [300.0, 1500.0, 200.0, 900.0] {
        rig.set_load(load);
        std::thread::sleep(Duration::from_secs(3));
    }
    let log = rig.sim.requests();
    let log: Vec<RequestRecord> = log.into_iter().filter(|r| r.at >= from).collect();
    let meter = assert_meter_silence_kept(&log);
    let growatt = assert_growatt_interval_kept(&log, GROWATT_INTERVAL);
    let writes = rig.hr3_writes().len() - writes_before;
    // Not vacuous: the bus was busy with both, limit writes included.
    assert!(meter >= 20, "{meter} meter requests");
    assert!(growatt >= 10, "{growatt} Growatt requests");
    assert!(writes >= 2, "{writes} limit writes");
    // Tracking: the PV reading at the limiter's pace (`limiter::pv_read_interval`: every other
    // slot while a write's effect is still to be seen, every 2 s once the estimate is settled),
    // the other slots free for limit writes. The bound covers the inverter's set-up session
    // when the limiter is switched on (a dozen commands at the Growatt's pace).
    let ac_reads: Vec<Instant> = log
        .iter()
        .filter(|r| r.unit == INVERTER && r.function == FN_READ_INPUT && r.addr == AC_BLOCK)
        .map(|r| r.at)
        .collect();
    let longest = ac_reads
        .windows(2)
        .map(|w| w[1].saturating_duration_since(w[0]))
        .max()
        .unwrap_or_default();
    assert!(
        ac_reads.len() >= 3,
        "{} AC reads of {growatt}",
        ac_reads.len()
    );
    assert!(
        longest <= Duration::from_millis(5000),
        "AC reads {longest:?} apart at most"
    );
    assert!(rig.has(&grid_name()) && rig.has(&pv_name()));
}

#[test]
fn the_command_lines_pace_is_kept_and_reads_follow_need_when_not_limiting() {
    let rig = start(&["--command-interval", "1=850"]);
    assert!(rig.wait_online(WAIT), "{}", rig.daemon.log());
    // The limiter is not configured: nothing needs the grid or the PV reading fast.
    let from = Instant::now();
    std::thread::sleep(Duration::from_secs(10));
    let to = Instant::now();
    let log: Vec<RequestRecord> = rig
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.at >= from && r.at <= to)
        .collect();
    // The whole run, identification and G100 set-up included, at the configured pace.
    let all = rig.sim.requests();
    let growatt = assert_growatt_interval_kept(&all, Duration::from_millis(850));
    assert_meter_silence_kept(&all);
    assert!(growatt >= 8, "{growatt} Growatt requests");
    // Upper bounds only (a loaded machine can only read less): the meter at the publish rate
    // (5/s) plus its slower registers, the inverter's AC block every few seconds.
    let secs = (to - from).as_secs_f64();
    let meter = log.iter().filter(|r| r.unit == METER).count() as f64;
    assert!(meter / secs <= 7.0, "{:.1} meter requests/s", meter / secs);
    let ac_reads = log
        .iter()
        .filter(|r| r.unit == INVERTER && r.addr == AC_BLOCK)
        .count() as f64;
    assert!(
        ac_reads <= secs / 2.0 + 1.0,
        "{ac_reads} AC reads in {secs:.0} s"
    );
    // And the grid is still published at the publish rate's order.
    assert!(wait_for(WAIT, || rig
        .value(&grid_name(), "/Ac/Power")
        .is_valid()));
}
