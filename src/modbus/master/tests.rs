//! The master over a scripted line on a virtual clock: exact bus transactions, no pty.

use std::time::Duration;

use super::*;
use crate::modbus::scripted::{ScriptedLine, with_crc};
use crate::modbus::{ExceptionCode, Parity};

const INVERTER: u8 = 1;
const METER: u8 = 2;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The request frame of a read.
fn read_request(unit: u8, function: u8, addr: u16, count: u16) -> Vec<u8> {
    let [a0, a1] = addr.to_be_bytes();
    let [c0, c1] = count.to_be_bytes();
    with_crc(&[unit, function, a0, a1, c0, c1])
}

/// The reply to a read of `words`.
fn read_reply(unit: u8, function: u8, words: &[u16]) -> Vec<u8> {
    let mut body = vec![unit, function, (2 * words.len()) as u8];
    body.extend(words.iter().flat_map(|w| w.to_be_bytes()));
    with_crc(&body)
}

/// The meter's 14-register read (voltage..power), its request and a reply of `fill`.
fn meter_request() -> Vec<u8> {
    read_request(METER, 4, 0, 14)
}

fn meter_reply(fill: u16) -> Vec<u8> {
    read_reply(METER, 4, &[fill; 14])
}

fn master_at(settings: SerialSettings) -> RtuMaster<ScriptedLine> {
    RtuMaster::from_port(ScriptedLine::new(settings), settings)
}

fn master() -> RtuMaster<ScriptedLine> {
    master_at(SerialSettings::default())
}

fn read_meter(m: &mut RtuMaster<ScriptedLine>) -> Result<[u16; 14], ModbusError> {
    let mut out = [0u16; 14];
    m.read_registers(METER, ReadFunction::Input, 0, &mut out)?;
    Ok(out)
}

fn near(a: Duration, b: Duration) -> bool {
    a.abs_diff(b) < Duration::from_micros(1)
}

#[test]
fn a_read_is_one_exact_exchange_with_its_counters() {
    let mut m = master();
    let s = m.settings();
    m.line_mut()
        .expect(&meter_request(), &[(ms(10), &meter_reply(7))]);
    assert_eq!(read_meter(&mut m).unwrap(), [7; 14]);
    let line = m.line_mut();
    assert_eq!(line.unsent(), 0);
    assert_eq!(line.unread(), 0);
    let stats = m.stats(METER);
    assert_eq!(stats.requests, 1);
    assert_eq!((stats.bytes_out, stats.bytes_in), (8, 33));
    assert_eq!((stats.total_errors(), stats.stale_bytes), (0, 0));
    // Request on the wire, the device's 10 ms, then the reply's first byte complete.
    assert!(near(
        stats.last_turnaround.unwrap(),
        ms(10) + s.wire_time(1)
    ));
    assert!(near(
        stats.bus_time,
        s.wire_time(8) + ms(10) + s.wire_time(33)
    ));
}

#[test]
fn every_request_keeps_the_inter_frame_silence_at_every_speed() {
    for (baud, silence) in [
        (9600, Duration::from_nanos(3_645_833)),
        (19200, Duration::from_nanos(1_822_916)),
        (38400, Duration::from_micros(1750)),
        (115200, Duration::from_micros(1750)),
    ] {
        let settings = SerialSettings {
            baud,
            parity: Parity::None,
        };
        let mut m = master_at(settings);
        for fill in 0..3 {
            m.line_mut()
                .expect(&meter_request(), &[(ms(2), &meter_reply(fill))]);
        }
        m.line_mut().expect(
            &with_crc(&[INVERTER, 6, 0, 3, 0, 50]),
            &[(ms(2), &with_crc(&[INVERTER, 6, 0, 3, 0, 50]))],
        );
        for fill in 0..3 {
            assert_eq!(read_meter(&mut m).unwrap(), [fill; 14]);
        }
        m.write_register(INVERTER, 3, 50).unwrap();
        let sent = m.line_mut().sent().to_vec();
        assert_eq!(sent.len(), 4);
        for frame in &sent[1..] {
            // Exactly the silence: not less (the guarantee), not more (bus time).
            assert!(near(frame.idle_before, silence), "{baud}: {frame:?}");
        }
    }
}

#[test]
fn stale_bytes_before_a_request_are_discarded_and_the_silence_counted_from_their_end() {
    let mut m = master();
    let silence = m.settings().frame_silence();
    // A late reply of exactly the shape of the next request's reply, arriving before it goes:
    // only the discard before the request tells it from the right one.
    let late = meter_reply(600);
    m.line_mut().arrive(ms(1), &late);
    m.line_mut()
        .expect(&meter_request(), &[(ms(10), &meter_reply(777))]);
    assert_eq!(read_meter(&mut m).unwrap(), [777; 14]);
    let sent = &m.line_mut().sent()[0];
    assert!(near(sent.idle_before, silence), "{sent:?}");
    let stats = m.stats(METER);
    assert_eq!(stats.stale_bytes, 33);
    assert_eq!((stats.bytes_in, stats.total_errors()), (33, 0));
}

#[test]
fn a_late_reply_from_another_unit_is_skipped_and_ours_taken() {
    let mut m = master();
    let s = m.settings();
    let late = read_reply(INVERTER, 4, &[1, 2]);
    m.line_mut().expect(
        &meter_request(),
        &[(ms(2), &late), (ms(30), &meter_reply(241))],
    );
    assert_eq!(read_meter(&mut m).unwrap(), [241; 14]);
    let stats = m.stats(METER);
    assert_eq!((stats.stale_bytes, stats.total_errors()), (9, 0));
    assert_eq!(stats.bytes_in, 9 + 33);
    // Turnaround of the meter's own reply, not of the late one.
    assert!(near(
        stats.last_turnaround.unwrap(),
        ms(30) + s.wire_time(1)
    ));
}

#[test]
fn a_late_reply_to_an_earlier_request_arriving_during_the_next_is_skipped() {
    let mut m = master();
    // The meter's reply to the 14-register read comes while its 10-register read waits.
    m.line_mut().expect(&meter_request(), &[]);
    m.line_mut().expect(
        &read_request(METER, 4, 0x46, 10),
        &[
            (ms(1), &meter_reply(1)),
            (ms(40), &read_reply(METER, 4, &[5; 10])),
        ],
    );
    assert_eq!(read_meter(&mut m).unwrap_err().kind(), ErrorKind::Timeout);
    let mut out = [0u16; 10];
    m.read_registers(METER, ReadFunction::Input, 0x46, &mut out)
        .unwrap();
    assert_eq!(out, [5; 10]);
    assert_eq!(m.stats(METER).stale_bytes, 33);
}

#[test]
fn another_units_reply_alone_is_the_wrong_unit_and_the_line_is_drained() {
    let mut m = master();
    let mut other = meter_reply(3);
    other[0] = 3;
    let other = with_crc(&other[..31]);
    m.line_mut().expect(&meter_request(), &[(ms(5), &other)]);
    m.line_mut()
        .expect(&meter_request(), &[(ms(5), &meter_reply(4))]);
    let e = read_meter(&mut m).unwrap_err();
    assert!(
        matches!(
            e,
            ModbusError::WrongUnit {
                expected: METER,
                got: 3
            }
        ),
        "{e}"
    );
    assert_eq!(read_meter(&mut m).unwrap(), [4; 14]);
    // After a frame that could not be trusted the line must be quiet for 20 ms.
    let sent = m.line_mut().sent().to_vec();
    assert!(sent[1].idle_before >= DRAIN_QUIET, "{:?}", sent[1]);
    assert_eq!(m.stats(METER).errors_of(ErrorKind::WrongUnit), 1);
}

#[test]
fn silence_is_a_timeout_at_exactly_the_timeout_and_widens_the_next() {
    let mut m = master();
    let timeout = m.current_timeout(METER, 8, 33);
    m.line_mut().expect(&meter_request(), &[]);
    let e = read_meter(&mut m).unwrap_err();
    assert!(matches!(e, ModbusError::Timeout), "{e}");
    let line = m.line_mut();
    let sent_end = line.sent()[0].at + SerialSettings::default().wire_time(8);
    assert_eq!(line.now() - sent_end, timeout);
    let stats = m.stats(METER);
    assert_eq!(stats.errors_of(ErrorKind::Timeout), 1);
    assert_eq!(stats.turnaround_estimate, MAX_TURNAROUND_ESTIMATE);
    assert!(m.current_timeout(METER, 8, 33) > timeout);
    // A cap shortens it (probing a lost unit).
    m.set_timeout_cap(METER, Some(ms(150)));
    m.line_mut().expect(&meter_request(), &[]);
    assert_eq!(read_meter(&mut m).unwrap_err().kind(), ErrorKind::Timeout);
    let line = m.line_mut();
    let sent_end = line.sent()[1].at + SerialSettings::default().wire_time(8);
    assert_eq!(line.now() - sent_end, ms(150));
}

#[test]
fn a_truncated_frame_ends_at_the_gap_and_the_next_read_succeeds() {
    let mut m = master();
    let reply = meter_reply(9);
    m.line_mut()
        .expect(&meter_request(), &[(ms(10), &reply[..20])]);
    m.line_mut()
        .expect(&meter_request(), &[(ms(10), &meter_reply(10))]);
    let e = read_meter(&mut m).unwrap_err();
    assert!(
        matches!(e, ModbusError::Malformed("truncated frame")),
        "{e}"
    );
    assert_eq!(read_meter(&mut m).unwrap(), [10; 14]);
    let stats = m.stats(METER);
    assert_eq!(stats.errors_of(ErrorKind::Malformed), 1);
    assert_eq!(stats.bytes_in, 20 + 33);
}

#[test]
fn a_crc_error_is_counted_and_what_follows_it_drained() {
    let mut m = master();
    let mut bad = meter_reply(9);
    bad[10] ^= 0x01;
    // Its tail: the rest of a longer burst the device sent.
    m.line_mut().expect(
        &meter_request(),
        &[(ms(10), &bad), (ms(10 + 35), &[0xAA; 6])],
    );
    m.line_mut()
        .expect(&meter_request(), &[(ms(10), &meter_reply(11))]);
    assert!(matches!(read_meter(&mut m), Err(ModbusError::Crc)));
    assert_eq!(read_meter(&mut m).unwrap(), [11; 14]);
    let stats = m.stats(METER);
    assert_eq!(stats.errors_of(ErrorKind::Crc), 1);
    assert_eq!(stats.stale_bytes, 6);
}

#[test]
fn an_exception_is_typed_and_the_next_request_needs_only_the_silence() {
    let mut m = master();
    let silence = m.settings().frame_silence();
    m.line_mut().expect(
        &read_request(METER, 4, 0x10, 4),
        &[(ms(8), &with_crc(&[METER, 0x84, 2]))],
    );
    m.line_mut()
        .expect(&meter_request(), &[(ms(8), &meter_reply(1))]);
    let mut out = [0u16; 4];
    let e = m
        .read_registers(METER, ReadFunction::Input, 0x10, &mut out)
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
    assert!(read_meter(&mut m).is_ok());
    assert!(near(m.line_mut().sent()[1].idle_before, silence));
    assert_eq!(m.stats(METER).errors_of(ErrorKind::Exception), 1);
    assert_eq!(m.stats(METER).bytes_in, 5 + 33);
}

#[test]
fn a_babbling_line_holds_a_request_at_most_one_frame_time_and_a_drain_at_most_its_bound() {
    let mut m = master();
    let s = m.settings();
    m.line_mut().babble(ms(1), None, 0x55);
    m.line_mut().expect(&meter_request(), &[]);
    let start = m.line_mut().start();
    let e = read_meter(&mut m).unwrap_err();
    assert!(matches!(e, ModbusError::Malformed(_)), "{e}");
    let line = m.line_mut();
    let sent = line.sent()[0].clone();
    let first_noise = start + ms(1) + s.wire_time(1);
    assert!(sent.at <= first_noise + s.wire_time(MAX_FRAME) + s.wire_time(1));
    // 33 bytes of noise taken for the reply, then the drain gives up after its bound.
    let reply_end = sent.at + s.wire_time(8) + s.wire_time(33);
    assert!(line.now() <= reply_end + DRAIN_MAX + s.wire_time(1));
    assert!(m.stats(METER).stale_bytes > 200);
}

#[test]
fn a_units_own_pause_holds_requests_to_it_only() {
    let mut m = master();
    let silence = m.settings().frame_silence();
    let write = with_crc(&[INVERTER, 6, 0, 3, 0, 50]);
    m.set_pacing(
        METER,
        UnitPacing {
            silence: ms(60),
            interval: Duration::ZERO,
        },
    );
    m.set_pacing(
        INVERTER,
        UnitPacing {
            silence: Duration::ZERO,
            interval: ms(400),
        },
    );
    m.line_mut().expect(&write, &[(ms(5), &write)]);
    m.line_mut()
        .expect(&meter_request(), &[(ms(5), &meter_reply(1))]);
    m.line_mut().expect(&write, &[(ms(5), &write)]);
    m.write_register(INVERTER, 3, 50).unwrap();
    let first_done = m.line_mut().now();
    let inverter_again = m.ready_at(INVERTER);
    assert_eq!(m.ready_at(METER), m.line_quiet_since + ms(60));
    read_meter(&mut m).unwrap();
    m.write_register(INVERTER, 3, 50).unwrap();
    let sent = m.line_mut().sent().to_vec();
    assert!(near(sent[1].idle_before, ms(60)), "{:?}", sent[1]);
    // The inverter's interval, counted from the end of its previous exchange (its echo), not
    // from its previous request nor the line's silence.
    assert_eq!(inverter_again, first_done + ms(400));
    assert_eq!(sent[2].at, inverter_again);
    assert!(sent[2].at - sent[0].at > ms(400));
    assert!(sent[2].idle_before > silence);
}

#[test]
fn the_interval_after_a_timeout_counts_from_the_timeout() {
    let mut m = master();
    m.set_pacing(
        INVERTER,
        UnitPacing {
            silence: Duration::ZERO,
            interval: ms(400),
        },
    );
    let write = with_crc(&[INVERTER, 6, 0, 3, 0, 50]);
    m.line_mut().expect(&write, &[]);
    m.line_mut().expect(&write, &[(ms(5), &write)]);
    assert!(matches!(
        m.write_register(INVERTER, 3, 50),
        Err(ModbusError::Timeout)
    ));
    let timed_out = m.line_mut().now();
    m.write_register(INVERTER, 3, 50).unwrap();
    assert_eq!(m.line_mut().sent()[1].at, timed_out + ms(400));
}

#[test]
fn a_broadcast_is_not_waited_for_but_the_next_request_gives_the_devices_time() {
    let mut m = master();
    m.line_mut()
        .expect(&with_crc(&[BROADCAST, 6, 0, 0x12, 0, 0]), &[]);
    m.line_mut()
        .expect(&meter_request(), &[(ms(5), &meter_reply(2))]);
    m.write_register(BROADCAST, 0x12, 0).unwrap();
    assert_eq!(m.stats(BROADCAST).total_errors(), 0);
    read_meter(&mut m).unwrap();
    let sent = m.line_mut().sent().to_vec();
    let silence = m.settings().frame_silence();
    assert!(near(sent[1].idle_before, BROADCAST_TURNAROUND + silence));
}

#[test]
fn invalid_requests_never_reach_the_line_and_are_not_counted() {
    let mut m = master();
    let mut none: [u16; 0] = [];
    let mut too_many = [0u16; 126];
    let refused = [
        m.read_registers(METER, ReadFunction::Input, 0, &mut none),
        m.read_registers(METER, ReadFunction::Input, 0, &mut too_many),
        m.read_registers(BROADCAST, ReadFunction::Input, 0, &mut [0u16; 1]),
        m.read_registers(248, ReadFunction::Holding, 0, &mut [0u16; 1]),
        m.read_registers(METER, ReadFunction::Holding, 0xFFFF, &mut [0u16; 2]),
        m.write_registers(INVERTER, 0, &[]),
        m.write_registers(INVERTER, 0, &[0; 124]),
    ];
    let expected = [
        InvalidRequest::ReadCount(0),
        InvalidRequest::ReadCount(126),
        InvalidRequest::BroadcastRead,
        InvalidRequest::ReservedUnit(248),
        InvalidRequest::AddressRange {
            addr: 0xFFFF,
            count: 2,
        },
        InvalidRequest::WriteCount(0),
        InvalidRequest::WriteCount(124),
    ];
    for (result, want) in refused.into_iter().zip(expected) {
        match result {
            Err(ModbusError::InvalidRequest(got)) => assert_eq!(got, want),
            other => panic!("{want:?}: {other:?}"),
        }
    }
    assert!(m.line_mut().sent().is_empty());
    for unit in [BROADCAST, INVERTER, METER, 248] {
        assert_eq!(m.stats(unit), UnitState::default().stats);
    }
}

#[test]
fn a_poll_loop_drives_a_transaction_in_steps() {
    let mut m = master();
    m.line_mut()
        .expect(&meter_request(), &[(ms(10), &meter_reply(42))]);
    assert!(matches!(m.advance(), Step::Idle));
    assert_eq!(m.next_deadline(), None);
    m.start(&Request::ReadInput {
        unit: METER,
        addr: 0,
        count: 14,
    })
    .unwrap();
    assert!(m.in_flight());
    assert_eq!(m.next_deadline(), Some(m.ready_at(METER)));
    // One at a time.
    assert!(matches!(
        m.start(&Request::WriteSingle {
            unit: INVERTER,
            addr: 3,
            value: 1
        }),
        Err(ModbusError::InvalidRequest(InvalidRequest::InFlight))
    ));
    // The loop: poll until the deadline or input, then advance.
    let mut wakes = 0;
    let reply = loop {
        match m.advance() {
            Step::Wait { until } => {
                assert_eq!(m.next_deadline(), Some(until));
                m.line_mut().wait(until).unwrap();
                wakes += 1;
            }
            Step::Done(result) => break result.unwrap(),
            Step::Idle => panic!("idle while in flight"),
        }
    };
    assert_eq!(reply, Reply::Registers { count: 14 });
    assert!(m.reply_registers().eq([42; 14]));
    assert!(!m.in_flight());
    assert_eq!(m.next_deadline(), None);
    // Silence, then the request; then a wake per reply byte on this byte-by-byte line.
    assert!(wakes <= 2 + 33, "{wakes}");
}

#[test]
fn a_failed_send_is_an_io_error_counted_once() {
    let mut m = master();
    m.line_mut().fail_sends(std::io::ErrorKind::BrokenPipe);
    let e = read_meter(&mut m).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io);
    let stats = m.stats(METER);
    assert_eq!((stats.requests, stats.errors_of(ErrorKind::Io)), (1, 1));
    assert_eq!(m.reply_registers().len(), 0);
}

#[test]
fn turnaround_estimate_jumps_up_and_decays_slowly() {
    let e = next_turnaround_estimate(ms(20), ms(40));
    assert_eq!(e, ms(40));
    let e = next_turnaround_estimate(ms(40), ms(8));
    assert_eq!(e, ms(36));
    let e = next_turnaround_estimate(ms(40), Duration::from_secs(5));
    assert_eq!(e, MAX_TURNAROUND_ESTIMATE);
    assert_eq!(
        widened_turnaround_estimate(MAX_TURNAROUND_ESTIMATE),
        MAX_TURNAROUND_ESTIMATE
    );
}

#[test]
fn timeout_has_a_floor_scales_with_turnaround_and_honours_the_cap() {
    let wire = ms(10);
    let t = response_timeout(ms(5), None, wire, wire);
    assert_eq!(t, TIMEOUT_FLOOR + 2 * wire);
    let t = response_timeout(ms(50), None, wire, wire);
    assert_eq!(t, ms(170));
    let t = response_timeout(ms(50), Some(ms(30)), wire, wire);
    assert_eq!(t, ms(30));
    // Never multi-second, whatever the unit did.
    let worst = response_timeout(MAX_TURNAROUND_ESTIMATE, None, wire, ms(274));
    assert!(worst < Duration::from_millis(1100));
}
