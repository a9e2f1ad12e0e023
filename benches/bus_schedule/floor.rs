//! The floor: the least a process can spend on what issue 13's scenarios ask of the daemon on
//! this machine, to judge the CPU targets against (as plant_loop's "plant floor" bounds the
//! limiter). It reads the meter's power at the scenario's pace (every 200 ms; while tracking, as
//! fast as the meter's 60 ms silence allows) and the inverter's AC power every 2 s (its probe
//! every 3 s while it sleeps), and publishes each reading as one `ItemsChanged` on its own
//! `com.victronenergy.grid.*` / `pvinverter.*` connection: no register map, no limiter, no
//! settings, no D-Bus calls served, nothing read back but the one register pair.
//!
//! It wakes as few times as a correct driver can. At the publish pace (limiter off, inverter
//! asleep) once per transaction: each wake collects the previous reply, publishes it and sends
//! the next request, trusting the reply to be whole within the simulator's turnaround (the next
//! request is 200 ms later, so the meter's 60 ms silence holds for any reply on time). While
//! tracking twice: the meter is read again 60 ms after its reply ends, so the reply's arrival is
//! waited for (one `poll` per chunk) and the silence slept out. A real driver also keeps a
//! register map, serves D-Bus calls and settings, runs the limiter and checks every frame
//! fully: the floor is a lower bound, not a target. Run as `bus_schedule --floor-client
//! SCENARIO` by the bench.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use dbus::channel::Channel;
use dbus::{Message, arg::Variant};
use dbus_modbus_client::modbus::{crc_ok, crc16};

const METER: u8 = 2;
const INVERTER: u8 = 1;
/// A two-register read on the wire: request 8 bytes, reply 9, 11 bits a character at 9600 baud.
const REQUEST_WIRE: Duration = Duration::from_micros(1146 * 8);
const REPLY_WIRE: Duration = Duration::from_micros(1146 * 9);
/// The simulator's turnaround (20 ms) and a little scheduling margin.
const TURNAROUND: Duration = Duration::from_millis(25);
const METER_SILENCE: Duration = Duration::from_millis(60);
const PUBLISH_INTERVAL: Duration = Duration::from_millis(200);
const PV_INTERVAL: Duration = Duration::from_secs(2);
const PROBE_INTERVAL: Duration = Duration::from_secs(3);
/// A probe of the sleeping inverter is given up after this (the daemon's probe cap).
const PROBE_TIMEOUT: Duration = Duration::from_millis(150);

/// Function 4, two registers from `addr`.
fn request(unit: u8, addr: u16) -> [u8; 8] {
    let [ah, al] = addr.to_be_bytes();
    let mut f = [unit, 4, ah, al, 0, 2, 0, 0];
    let [cl, ch] = crc16(&f[..6]).to_le_bytes();
    f[6] = cl;
    f[7] = ch;
    f
}

/// The four data bytes of a good two-register reply from `unit`.
fn reply_data(unit: u8, buf: &[u8]) -> Option<[u8; 4]> {
    match *buf {
        [u, 4, 4, a, b, c, d, _, _] if u == unit && crc_ok(buf) => Some([a, b, c, d]),
        _ => None,
    }
}

/// One service: a private connection owning `name`.
fn service(bus: &str, name: &str) -> Channel {
    let mut ch = Channel::open_private(bus).expect("bus");
    ch.register().expect("hello");
    let msg = Message::new_method_call(
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus",
        "RequestName",
    )
    .expect("message")
    .append2(name, 4u32);
    ch.send_with_reply_and_block(msg, Duration::from_secs(5))
        .expect("name");
    ch
}

fn publish(ch: &Channel, power: f64) {
    let entry = |v: f64| {
        let mut d = std::collections::HashMap::new();
        d.insert("Value", Variant(Box::new(v) as Box<dyn dbus::arg::RefArg>));
        d.insert(
            "Text",
            Variant(Box::new(format!("{v:.0} W")) as Box<dyn dbus::arg::RefArg>),
        );
        d
    };
    let mut items = std::collections::HashMap::new();
    items.insert("/Ac/Power", entry(power));
    items.insert("/Ac/L1/Power", entry(power));
    let msg = Message::new_signal("/", "com.victronenergy.BusItem", "ItemsChanged")
        .expect("signal")
        .append1(items);
    let _ = ch.send(msg);
    ch.flush();
    // What the bus sent us (NameAcquired and the like) is read and dropped, so that nothing
    // queues up; no method calls come.
    let _ = ch.read_write(Some(Duration::ZERO));
    while ch.pop_message().is_some() {}
}

/// `bus_schedule --floor-client SCENARIO -s TTY -r BAUD --dbus BUS`.
pub fn main(args: &[String]) {
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| panic!("floor client: {flag} missing"))
    };
    let scenario = value("--floor-client");
    let (tracking, asleep) = (scenario == "tracking", scenario == "asleep");
    let mut tty = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(value("-s"))
        .expect("tty");
    // Raw mode, as any Modbus master sets it.
    // SAFETY: termios is plain data, filled by tcgetattr before use; the fd is open.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        libc::tcgetattr(tty.as_raw_fd(), &mut t);
        libc::cfmakeraw(&mut t);
        libc::tcsetattr(tty.as_raw_fd(), libc::TCSANOW, &t);
    }
    let bus = value("--dbus");
    let grid = service(&bus, "com.victronenergy.grid.floor");
    let pv = (!asleep).then(|| service(&bus, "com.victronenergy.pvinverter.floor"));
    let meter_req = request(METER, 0x000C);
    let pv_req = request(INVERTER, 35);
    let mut buf = [0u8; 64];
    let mut in_flight: Option<(u8, Instant)> = None;
    let mut next_pv = Instant::now();
    let mut next_meter = Instant::now();
    let mut grid_published = Instant::now();
    loop {
        // At the publish pace: collect the previous reply (complete by now, or never coming).
        if let Some((unit, _)) = in_flight.take() {
            let n = tty.read(&mut buf).unwrap_or(0);
            let power = buf.get(..n).and_then(|b| reply_data(unit, b));
            deliver(unit, power, &grid, pv.as_ref(), &mut grid_published);
        }
        let now = Instant::now();
        let (unit, frame, interval) = if now >= next_pv {
            let every = if asleep { PROBE_INTERVAL } else { PV_INTERVAL };
            (INVERTER, &pv_req, every)
        } else if now >= next_meter {
            (METER, &meter_req, PUBLISH_INTERVAL)
        } else {
            sleep_until(next_meter.min(next_pv));
            continue;
        };
        let _ = tty.write_all(frame);
        let timeout = if unit == INVERTER && asleep {
            PROBE_TIMEOUT
        } else {
            TURNAROUND + REPLY_WIRE
        };
        let done = if tracking {
            // Sees the reply arrive: the meter's silence counts from its end.
            let n = await_reply(&mut tty, &mut buf, now + REQUEST_WIRE + PROBE_TIMEOUT);
            let power = buf.get(..n).and_then(|b| reply_data(unit, b));
            deliver(unit, power, &grid, pv.as_ref(), &mut grid_published);
            Instant::now()
        } else {
            in_flight = Some((unit, now));
            now + REQUEST_WIRE + timeout
        };
        if unit == INVERTER {
            next_pv = now + interval;
        } else {
            // While tracking as fast as the silence allows, otherwise at the publish pace.
            next_meter = if tracking { done } else { now + interval };
        }
        // The meter's silence counts from the end of any exchange on the line.
        next_meter = next_meter.max(done + METER_SILENCE);
        sleep_until(next_meter.min(next_pv).max(done));
    }
}

/// Publishes a reading: the grid's at most once per publish interval (less a tenth, as the
/// daemon throttles it), the inverter's each time.
fn deliver(
    unit: u8,
    data: Option<[u8; 4]>,
    grid: &Channel,
    pv: Option<&Channel>,
    grid_published: &mut Instant,
) {
    match (unit, data, pv) {
        (METER, Some(d), _) if grid_published.elapsed() >= PUBLISH_INTERVAL * 9 / 10 => {
            *grid_published = Instant::now();
            publish(grid, f64::from(f32::from_be_bytes(d)));
        }
        (INVERTER, Some(d), Some(pv)) => publish(pv, f64::from(u32::from_be_bytes(d)) / 10.0),
        _ => {}
    }
}

/// Reads a two-register reply as it arrives (one `poll` per chunk), until it is whole or
/// `deadline` passes; its length.
fn await_reply(tty: &mut std::fs::File, buf: &mut [u8; 64], deadline: Instant) -> usize {
    let mut n = 0;
    while n < 9 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let mut fd = libc::pollfd {
            fd: tty.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(left.as_millis() + 1).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut fd, 1, ms) } <= 0 {
            continue;
        }
        match tty.read(&mut buf[n..]) {
            Ok(k) => n += k,
            Err(_) => break,
        }
    }
    n
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}
