//! The RTU master over a real pty against the in-process simulator.

use std::time::{Duration, Instant, SystemTime};

use dbus_modbus_client::modbus::{
    ErrorKind, ExceptionCode, ModbusError, Parity, ReadFunction, RtuMaster, SerialSettings,
};
use modbus_sim::{
    FaultKind, GROWATT_DEVICE_TYPE, GROWATT_FIRMWARE, GROWATT_SERIAL, METER_CODE, METER_FIRMWARE,
    METER_SERIAL, POWER_RATE_UNLIMITED, Plant, RegisterKind, SimConfig, SimHandle, Simulator,
};

const GROWATT: u8 = 1;
const METER: u8 = 2;

// Small local decoders: the registers module is written in parallel.
fn u32_at(r: &[u16], i: usize) -> u32 {
    (u32::from(r[i]) << 16) | u32::from(r[i + 1])
}
fn s32_at(r: &[u16], i: usize) -> i32 {
    u32_at(r, i) as i32
}
fn f32_at(r: &[u16], i: usize) -> f32 {
    f32::from_bits(u32_at(r, i))
}
fn s16_at(r: &[u16], i: usize) -> i16 {
    r[i] as i16
}
fn text_at(r: &[u16], i: usize, n: usize) -> String {
    r[i..i + n]
        .iter()
        .flat_map(|w| w.to_be_bytes())
        .filter(|b| *b != 0)
        .map(char::from)
        .collect()
}

fn start() -> (SimHandle, RtuMaster) {
    let sim = Simulator::start(SimConfig::default()).unwrap();
    let master = RtuMaster::open(sim.tty_path(), SerialSettings::default()).unwrap();
    (sim, master)
}

fn read(m: &mut RtuMaster, unit: u8, f: ReadFunction, addr: u16, n: usize) -> Vec<u16> {
    let mut out = vec![0u16; n];
    m.read_registers(unit, f, addr, &mut out).unwrap();
    out
}

/// Waits (generously) until the simulator has written `n` replies.
fn wait_for_reply(sim: &SimHandle, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while sim.replies_sent() < n {
        assert!(Instant::now() < deadline, "simulator never replied");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn meter_power(m: &mut RtuMaster) -> Result<f32, ModbusError> {
    let mut r = [0u16; 14];
    m.read_registers(METER, ReadFunction::Input, 0, &mut r)?;
    Ok(f32_at(&r, 12))
}

#[test]
fn every_register_type_decodes_to_the_served_values() {
    let (sim, mut m) = start();
    sim.set(METER, "voltage", 239.5).unwrap();
    sim.set(METER, "power", -1234.25).unwrap();
    sim.set(METER, "frequency", 49.98).unwrap();

    // SDM230: f32 big-endian input registers, u32/u16 identification.
    let r = read(&mut m, METER, ReadFunction::Input, 0x0000, 14);
    assert_eq!(f32_at(&r, 0), 239.5);
    assert_eq!(f32_at(&r, 12), -1234.25);
    let r = read(&mut m, METER, ReadFunction::Input, 0x0046, 10);
    assert_eq!(f32_at(&r, 0), 49.98);
    assert!(f32_at(&r, 2) > 1000.0, "import energy is served");
    let r = read(&mut m, METER, ReadFunction::Holding, 0xFC00, 4);
    assert_eq!(u32_at(&r, 0), METER_SERIAL);
    assert_eq!(r[2], METER_CODE);
    assert_eq!(r[3], METER_FIRMWARE);

    // Growatt: u16, u32 (0.1 W), s16 temperature, ASCII text, s32 via a raw value.
    sim.set(GROWATT, "status", 1.0).unwrap();
    sim.set(GROWATT, "ac_power", 3210.7).unwrap();
    sim.set(GROWATT, "inverter_temp", -7.5).unwrap();
    sim.set(GROWATT, "fault_code", 117.0).unwrap();
    let s32: i32 = -123_456;
    sim.set_raw(GROWATT, RegisterKind::Input, 120, (s32 as u32 >> 16) as u16)
        .unwrap();
    sim.set_raw(GROWATT, RegisterKind::Input, 121, s32 as u32 as u16)
        .unwrap();
    let ir = read(&mut m, GROWATT, ReadFunction::Input, 0, 125);
    assert_eq!(ir[0], 1);
    assert_eq!(u32_at(&ir, 35), 32107);
    assert_eq!(s16_at(&ir, 93), -75);
    assert_eq!(ir[105], 117);
    assert_eq!(s32_at(&ir, 120), s32);

    let hr = read(&mut m, GROWATT, ReadFunction::Holding, 0, 125);
    // As the unit leaves the factory: not limited, the export limit off.
    assert_eq!(hr[3], POWER_RATE_UNLIMITED);
    assert_eq!(u32_at(&hr, 6), 42_000);
    assert_eq!(text_at(&hr, 9, 3), GROWATT_FIRMWARE);
    assert_eq!(text_at(&hr, 23, 5), GROWATT_SERIAL);
    assert_eq!(hr[30], u16::from(GROWATT));
    assert_eq!(hr[43], GROWATT_DEVICE_TYPE);
    assert_eq!(hr[123], 0);
    let serial = read(&mut m, GROWATT, ReadFunction::Holding, 209, 15);
    assert_eq!(text_at(&serial, 0, 15), GROWATT_SERIAL);
    assert_eq!(read(&mut m, GROWATT, ReadFunction::Holding, 3000, 1), [0]);

    let stats = m.stats(METER);
    assert_eq!(stats.requests, 3);
    assert_eq!(stats.bytes_out, 3 * 8);
    assert_eq!(stats.bytes_in, (5 + 28) + (5 + 20) + (5 + 8));
    assert_eq!(stats.total_errors(), 0);
    assert!(stats.last_turnaround.is_some());
    assert!(stats.bus_time > Duration::ZERO);
}

#[test]
fn writes_land_and_are_logged() {
    let (sim, mut m) = start();
    let before = SystemTime::now();
    m.write_register(GROWATT, 3, 55).unwrap();
    m.write_registers(GROWATT, 122, &[1, 900]).unwrap();
    assert_eq!(sim.register(GROWATT, RegisterKind::Holding, 3), Ok(55));
    assert_eq!(
        read(&mut m, GROWATT, ReadFunction::Holding, 122, 2),
        [1, 900]
    );
    let log = sim.writes();
    let got: Vec<(u8, u16, u16)> = log.iter().map(|w| (w.unit, w.addr, w.value)).collect();
    assert_eq!(got, [(1, 3, 55), (1, 122, 1), (1, 123, 900)]);
    assert!(log.iter().all(|w| w.at >= before));
    // A write outside the map is refused by the device, and not logged: a Growatt answers
    // Illegal Function for a range it lacks (docs/reference/growatt.md §2).
    let e = m.write_register(GROWATT, 500, 1).unwrap_err();
    assert!(
        matches!(
            e,
            ModbusError::Exception {
                function: 6,
                code: ExceptionCode::IllegalFunction
            }
        ),
        "{e}"
    );
    assert_eq!(sim.writes().len(), 3);
}

#[test]
fn reads_outside_the_map_get_exception_2() {
    let (_sim, mut m) = start();
    let mut out = [0u16; 4];
    // Crosses the SDM230 barrier at 0x12.
    let e = m
        .read_registers(METER, ReadFunction::Input, 0x0010, &mut out)
        .unwrap_err();
    assert!(
        matches!(
            e,
            ModbusError::Exception {
                function: 4,
                code: ExceptionCode::IllegalDataAddress
            }
        ),
        "{e}"
    );
    assert_eq!(m.stats(METER).errors_of(ErrorKind::Exception), 1);
    assert!(meter_power(&mut m).is_ok());
}

#[test]
fn each_fault_gives_its_own_error_and_the_next_transaction_succeeds() {
    let (sim, mut m) = start();
    let cases = [
        (FaultKind::Offline, ErrorKind::Timeout),
        (FaultKind::Crc, ErrorKind::Crc),
        (FaultKind::Garbage, ErrorKind::Malformed),
        (FaultKind::Truncated, ErrorKind::Malformed),
        (FaultKind::Exception(4), ErrorKind::Exception),
        (FaultKind::WrongUnit, ErrorKind::WrongUnit),
    ];
    for (n, (fault, kind)) in cases.into_iter().enumerate() {
        sim.fault(METER, fault, false);
        let e = meter_power(&mut m).unwrap_err();
        assert_eq!(e.kind(), kind, "{fault:?} gave {e}");
        if let ModbusError::Exception { code, .. } = e {
            assert_eq!(code, ExceptionCode::ServerDeviceFailure);
        }
        sim.set(METER, "power", 100.0 + n as f64).unwrap();
        assert_eq!(
            meter_power(&mut m).unwrap(),
            100.0 + n as f32,
            "after {fault:?}"
        );
        assert_eq!(
            m.stats(METER).errors_of(kind) as usize,
            1 + usize::from(n == 3)
        );
    }
}

#[test]
fn slow_replies_within_the_timeout_succeed_and_beyond_it_time_out() {
    let (sim, mut m) = start();
    sim.fault(METER, FaultKind::Slow(Duration::from_millis(60)), false);
    assert!(meter_power(&mut m).is_ok());
    // Turnaround counts from the end of the request on the wire (8 bytes after it was handed to
    // the line; on the pty the simulator receives it at once and waits its wire time itself).
    let request_wire = m.wire_time(8);
    assert!(m.stats(METER).last_turnaround.unwrap() + request_wire >= Duration::from_millis(60));

    m.set_timeout_cap(METER, Some(Duration::from_millis(150)));
    sim.fault(METER, FaultKind::Slow(Duration::from_millis(600)), false);
    let e = meter_power(&mut m).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    m.set_timeout_cap(METER, None);
    // The busy device answers its old request late; that reply must be discarded.
    wait_for_reply(&sim, 2);
    sim.set(METER, "power", 4321.0).unwrap();
    assert_eq!(meter_power(&mut m).unwrap(), 4321.0);
    assert!(m.stats(METER).stale_bytes > 0);
}

#[test]
fn a_late_reply_arriving_during_the_next_request_is_not_taken_for_its_reply() {
    let (sim, mut m) = start();
    sim.fault(METER, FaultKind::Late, false);
    assert_eq!(meter_power(&mut m).unwrap_err().kind(), ErrorKind::Timeout);
    // The held reply (14 registers) is sent as soon as this request (10 registers) arrives.
    sim.set(METER, "frequency", 50.25).unwrap();
    let r = read(&mut m, METER, ReadFunction::Input, 0x0046, 10);
    assert_eq!(f32_at(&r, 0), 50.25);
    assert_eq!(m.stats(METER).stale_bytes, 33);
    assert!(meter_power(&mut m).is_ok());
}

#[test]
fn a_late_reply_arriving_before_the_next_request_is_discarded() {
    let (sim, mut m) = start();
    sim.set(METER, "power", 600.0).unwrap();
    sim.fault(METER, FaultKind::Late, false);
    assert_eq!(meter_power(&mut m).unwrap_err().kind(), ErrorKind::Timeout);
    // The simulator gives up holding the reply after 1 s and sends it into the idle line.
    wait_for_reply(&sim, 1);
    sim.set(METER, "power", 777.0).unwrap();
    // Same request shape as the late reply: only the pre-request discard tells them apart.
    assert_eq!(meter_power(&mut m).unwrap(), 777.0);
    assert_eq!(m.stats(METER).stale_bytes, 33);
}

#[test]
fn an_offline_unit_times_out_quickly_every_time() {
    let (sim, mut m) = start();
    sim.fault(GROWATT, FaultKind::Offline, true);
    for _ in 0..4 {
        let t = Instant::now();
        let mut out = [0u16; 125];
        let e = m
            .read_registers(GROWATT, ReadFunction::Input, 0, &mut out)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Timeout);
        // A bound, not a benchmark: the original stalled for 12 s.
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }
    // The other unit on the bus is unaffected, the sleeper comes back.
    assert!(meter_power(&mut m).is_ok());
    sim.clear_fault(GROWATT);
    assert_eq!(
        read(&mut m, GROWATT, ReadFunction::Holding, 43, 1),
        [GROWATT_DEVICE_TYPE]
    );
    assert_eq!(m.stats(GROWATT).errors_of(ErrorKind::Timeout), 4);
}

#[test]
fn a_vanished_port_is_an_io_error_and_reopen_recovers_a_present_one() {
    let (sim, mut m) = start();
    assert!(meter_power(&mut m).is_ok());
    m.reopen().unwrap();
    assert!(meter_power(&mut m).is_ok());
    drop(sim);
    let e = meter_power(&mut m).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io, "{e}");
    assert!(m.reopen().is_err(), "the pty is gone");
}

#[test]
fn even_parity_works() {
    let sim = Simulator::start(SimConfig::default()).unwrap();
    let settings = SerialSettings {
        baud: 19200,
        parity: Parity::Even,
    };
    let mut m = RtuMaster::open(sim.tty_path(), settings).unwrap();
    assert!(meter_power(&mut m).is_ok());
}

#[test]
fn realistic_timing_costs_at_least_the_wire_time() {
    let sim = Simulator::start(SimConfig {
        realistic: true,
        turnaround: Duration::from_millis(10),
        ..SimConfig::default()
    })
    .unwrap();
    let mut m = RtuMaster::open(sim.tty_path(), SerialSettings::default()).unwrap();
    assert!(meter_power(&mut m).is_ok());
    // The simulator waits 41 bytes of wire time plus its turnaround before replying; the
    // master counts its turnaround from the end of the request's 8 bytes on the wire.
    let floor = m.wire_time(33) + Duration::from_millis(10);
    assert!(m.stats(METER).last_turnaround.unwrap() >= floor);
}

#[test]
fn bad_arguments_are_refused_without_touching_the_bus() {
    let (sim, mut m) = start();
    let mut none: [u16; 0] = [];
    let mut too_many = [0u16; 126];
    assert!(
        m.read_registers(METER, ReadFunction::Input, 0, &mut none)
            .is_err()
    );
    assert!(
        m.read_registers(METER, ReadFunction::Input, 0, &mut too_many)
            .is_err()
    );
    assert!(m.write_registers(GROWATT, 0, &[]).is_err());
    assert_eq!(sim.requests_seen(), 0);
}

#[test]
fn requests_keep_the_inter_frame_silence() {
    let (sim, mut m) = start();
    for _ in 0..10 {
        meter_power(&mut m).unwrap();
    }
    // Measured by the simulator, from its reply to the next request: a lower bound the master
    // guarantees by sleeping, so no load can make it fail.
    let idle = sim.min_idle_before_request().unwrap();
    assert!(
        idle >= SerialSettings::default().frame_silence(),
        "{idle:?}"
    );
}

#[test]
fn broadcast_writes_reach_every_device_without_waiting_for_a_reply() {
    let (sim, mut m) = start();
    m.write_register(0, 0x0012, 0).unwrap();
    assert_eq!(m.stats(0).errors_of(ErrorKind::Timeout), 0);
    assert!(meter_power(&mut m).is_ok());
    let units: Vec<u8> = sim.writes().iter().map(|w| w.unit).collect();
    assert_eq!(units, [2, 1]);
    assert_eq!(sim.replies_sent(), 1);
    let mut out = [0u16; 1];
    assert!(
        m.read_registers(0, ReadFunction::Input, 0, &mut out)
            .is_err()
    );
}

#[test]
fn a_master_from_an_open_port_works_but_cannot_reopen() {
    let sim = Simulator::start(SimConfig::default()).unwrap();
    let port = serialport::new(sim.tty_path(), 9600).open_native().unwrap();
    let mut m = RtuMaster::from_port(port, SerialSettings::default());
    assert!(meter_power(&mut m).is_ok());
    assert_eq!(m.reopen().unwrap_err().kind(), ErrorKind::Io);
}

#[test]
fn the_plant_model_follows_the_power_rate_written_over_the_wire() {
    let sim = Simulator::start(SimConfig {
        plant: Some(Plant {
            load_w: 400.0,
            pv_available_w: 4000.0,
            // Effectively instant, so the test waits on the wire, not on the ramp.
            ramp_w_per_s: 1e9,
        }),
        ..SimConfig::default()
    })
    .unwrap();
    let mut m = RtuMaster::open(sim.tty_path(), SerialSettings::default()).unwrap();
    m.write_register(GROWATT, 3, 50).unwrap();
    // 50 % of 4200 W = 2100 W out of the inverter, the meter sees 400 - 2100.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ir = read(&mut m, GROWATT, ReadFunction::Input, 35, 2);
        if u32_at(&ir, 0) == 21_000 && meter_power(&mut m).unwrap() == -1700.0 {
            break;
        }
        assert!(Instant::now() < deadline, "plant never settled: {ir:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Energies integrate: export grows while the meter reads negative.
    let export = |m: &mut RtuMaster| f32_at(&read(m, METER, ReadFunction::Input, 0x004A, 2), 0);
    let before = export(&mut m);
    let deadline = Instant::now() + Duration::from_secs(20);
    while export(&mut m) <= before {
        assert!(Instant::now() < deadline, "export energy never grew");
        std::thread::sleep(Duration::from_millis(50));
    }
}
