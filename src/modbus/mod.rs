//! Modbus RTU master over a serial port: silence and stale-input discard before each request,
//! exact-length replies, strict checks, typed errors, adaptive per-unit timeouts and counters.
//! No heap allocation per transaction: one fixed receive buffer, one fixed request buffer.

mod frame;

use std::fmt;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use serialport::{ClearBuffer, SerialPort, TTYPort};

pub use frame::{
    FN_READ_HOLDING, FN_READ_INPUT, FN_WRITE_MULTIPLE, FN_WRITE_SINGLE, FrameBuf, MAX_FRAME,
    MAX_READ_REGISTERS, MAX_WRITE_REGISTERS, Request, Response, crc_ok, crc16, foreign_frame_len,
    parse_response, reply_frame_len,
};

/// Serial parity; 8 data bits and 1 stop bit always.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Parity {
    #[default]
    None,
    Even,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SerialSettings {
    pub baud: u32,
    pub parity: Parity,
}

impl Default for SerialSettings {
    fn default() -> Self {
        Self {
            baud: 9600,
            parity: Parity::None,
        }
    }
}

impl SerialSettings {
    /// Bits per character on the wire: start + 8 data + parity + 1 stop.
    pub fn bits_per_char(&self) -> u32 {
        match self.parity {
            Parity::None => 10,
            Parity::Even => 11,
        }
    }

    /// Time to send `bytes` characters.
    pub fn wire_time(&self, bytes: usize) -> Duration {
        let bits = u64::try_from(bytes).unwrap_or(u64::MAX) * u64::from(self.bits_per_char());
        Duration::from_nanos(bits.saturating_mul(1_000_000_000) / u64::from(self.baud.max(1)))
    }

    /// The inter-frame silence: 3.5 characters, fixed at 1.75 ms above 19200 baud (spec).
    pub fn frame_silence(&self) -> Duration {
        if self.baud > 19200 {
            Duration::from_micros(1750)
        } else {
            self.wire_time(7) / 2
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFunction {
    /// 0x03
    Holding,
    /// 0x04
    Input,
}

impl ReadFunction {
    pub fn code(self) -> u8 {
        match self {
            ReadFunction::Holding => FN_READ_HOLDING,
            ReadFunction::Input => FN_READ_INPUT,
        }
    }
}

#[derive(Debug)]
pub enum ModbusError {
    /// No reply at all within the response timeout.
    Timeout,
    /// A full-length frame with a bad CRC.
    Crc,
    /// Short/truncated frame, bad byte count, wrong function, bad echo, garbage.
    Malformed(&'static str),
    WrongUnit {
        expected: u8,
        got: u8,
    },
    /// A Modbus exception reply.
    Exception {
        function: u8,
        code: u8,
    },
    /// Port gone, read or write failed.
    Io(std::io::Error),
}

/// The error classes, for counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    Timeout,
    Crc,
    Malformed,
    WrongUnit,
    Exception,
    Io,
}

impl ErrorKind {
    pub const COUNT: usize = 6;
    pub const ALL: [ErrorKind; ErrorKind::COUNT] = [
        ErrorKind::Timeout,
        ErrorKind::Crc,
        ErrorKind::Malformed,
        ErrorKind::WrongUnit,
        ErrorKind::Exception,
        ErrorKind::Io,
    ];

    pub fn index(self) -> usize {
        self as usize
    }
}

impl ModbusError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ModbusError::Timeout => ErrorKind::Timeout,
            ModbusError::Crc => ErrorKind::Crc,
            ModbusError::Malformed(_) => ErrorKind::Malformed,
            ModbusError::WrongUnit { .. } => ErrorKind::WrongUnit,
            ModbusError::Exception { .. } => ErrorKind::Exception,
            ModbusError::Io(_) => ErrorKind::Io,
        }
    }
}

impl fmt::Display for ModbusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModbusError::Timeout => write!(f, "no reply (timeout)"),
            ModbusError::Crc => write!(f, "CRC error"),
            ModbusError::Malformed(what) => write!(f, "malformed reply: {what}"),
            ModbusError::WrongUnit { expected, got } => {
                write!(f, "reply from unit {got}, expected unit {expected}")
            }
            ModbusError::Exception { function, code } => {
                write!(f, "Modbus exception {code} on function {function:#04x}")
            }
            ModbusError::Io(e) => write!(f, "serial I/O error: {e}"),
        }
    }
}

impl std::error::Error for ModbusError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ModbusError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for ModbusError {
    fn from(e: std::io::Error) -> Self {
        ModbusError::Io(e)
    }
}

impl From<serialport::Error> for ModbusError {
    fn from(e: serialport::Error) -> Self {
        ModbusError::Io(e.into())
    }
}

/// Counters for one unit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnitStats {
    pub requests: u64,
    pub bytes_out: u64,
    pub bytes_in: u64,
    /// Indexed by [`ErrorKind::index`].
    pub errors: [u64; ErrorKind::COUNT],
    /// Line time used by this unit: from the start of each request to the end of its reply
    /// (or of its timeout).
    pub bus_time: Duration,
    /// Request sent → first reply byte, of the last successful transaction.
    pub last_turnaround: Option<Duration>,
    /// The smoothed maximum turnaround the timeout is derived from.
    pub turnaround_estimate: Duration,
    /// Bytes discarded as stale (before a request, or late replies skipped).
    pub stale_bytes: u64,
}

impl UnitStats {
    pub fn errors_of(&self, kind: ErrorKind) -> u64 {
        self.errors.get(kind.index()).copied().unwrap_or(0)
    }
    pub fn total_errors(&self) -> u64 {
        self.errors.iter().sum()
    }
}

/// Unit 0: writes to every device, no reply.
pub const BROADCAST: u8 = 0;

const BROADCAST_TURNAROUND: Duration = Duration::from_millis(100);

/// Turnaround assumed before a unit has answered once.
const INITIAL_TURNAROUND: Duration = Duration::from_millis(100);
/// The estimate never exceeds this, so a timeout stays well under a second plus wire time.
const MAX_TURNAROUND_ESTIMATE: Duration = Duration::from_millis(150);
/// The response timeout never drops below this (OS and USB adapter latencies).
const TIMEOUT_FLOOR: Duration = Duration::from_millis(100);
const TIMEOUT_PER_TURNAROUND: u32 = 3;
/// Longest gap allowed between bytes of one reply: USB adapters deliver in chunks every
/// few ms (FTDI latency timer 16 ms), so this is far above 1.5 characters but still quick.
const MAX_INTER_BYTE_GAP: Duration = Duration::from_millis(50);
/// After a bad frame: keep reading until the line is quiet this long (bounded overall).
const DRAIN_QUIET: Duration = Duration::from_millis(20);
const DRAIN_MAX: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy)]
struct UnitState {
    stats: UnitStats,
    timeout_cap: Option<Duration>,
}

impl Default for UnitState {
    fn default() -> Self {
        Self {
            stats: UnitStats {
                turnaround_estimate: INITIAL_TURNAROUND,
                ..UnitStats::default()
            },
            timeout_cap: None,
        }
    }
}

/// Smoothed maximum: jumps up to any slower observation, decays slowly towards faster ones.
fn next_turnaround_estimate(current: Duration, observed: Duration) -> Duration {
    let next = if observed >= current {
        observed
    } else {
        current - (current - observed) / 8
    };
    next.min(MAX_TURNAROUND_ESTIMATE)
}

/// After a timeout the unit may just be slower than thought: widen the estimate (bounded).
fn widened_turnaround_estimate(current: Duration) -> Duration {
    (current * 3 / 2).min(MAX_TURNAROUND_ESTIMATE)
}

/// Whole-reply timeout, counted from the end of the request.
fn response_timeout(
    estimate: Duration,
    cap: Option<Duration>,
    request_wire: Duration,
    response_wire: Duration,
) -> Duration {
    let t = (estimate * TIMEOUT_PER_TURNAROUND).max(TIMEOUT_FLOOR) + request_wire + response_wire;
    match cap {
        Some(cap) => t.min(cap),
        None => t,
    }
}

pub struct RtuMaster {
    /// None only between a failed reopen and the next successful one.
    port: Option<TTYPort>,
    path: Option<String>,
    settings: SerialSettings,
    /// End of the last frame seen or sent on the line.
    line_quiet_since: Instant,
    units: Box<[UnitState; 256]>,
    tx: FrameBuf,
    rx: [u8; MAX_FRAME],
}

impl RtuMaster {
    /// Opens `path` (any path, symlinks such as /dev/serial/by-id included), 8 data bits, 1 stop.
    pub fn open(path: &str, settings: SerialSettings) -> Result<Self, ModbusError> {
        let port = open_port(path, settings)?;
        let mut master = Self::from_port(port, settings);
        master.path = Some(path.to_string());
        Ok(master)
    }

    /// Wraps an open port (e.g. one end of `TTYPort::pair()`); `reopen` needs a path, so it
    /// fails on such a master. The port's line settings are left as they are.
    pub fn from_port(port: TTYPort, settings: SerialSettings) -> Self {
        Self {
            port: Some(port),
            path: None,
            settings,
            line_quiet_since: Instant::now(),
            units: Box::new([UnitState::default(); 256]),
            tx: FrameBuf::default(),
            rx: [0; MAX_FRAME],
        }
    }

    /// Closes and opens the port again (after an Io error). Counters are kept.
    pub fn reopen(&mut self) -> Result<(), ModbusError> {
        let path = self.path.clone().ok_or_else(|| {
            ModbusError::Io(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "port has no path to reopen",
            ))
        })?;
        // Close the old fd first: an exclusive open of the same tty fails while it is held.
        self.port = None;
        self.port = Some(open_port(&path, self.settings)?);
        self.line_quiet_since = Instant::now();
        Ok(())
    }

    pub fn settings(&self) -> SerialSettings {
        self.settings
    }

    /// Reads `out.len()` (1..=125) registers starting at `addr`.
    pub fn read_registers(
        &mut self,
        unit: u8,
        f: ReadFunction,
        addr: u16,
        out: &mut [u16],
    ) -> Result<(), ModbusError> {
        let count = u16::try_from(out.len()).unwrap_or(u16::MAX);
        if count == 0 || count > MAX_READ_REGISTERS {
            return Err(ModbusError::Malformed("read count outside 1..=125"));
        }
        if unit == BROADCAST {
            return Err(ModbusError::Malformed("a broadcast cannot be read"));
        }
        let req = Request {
            unit,
            function: f.code(),
            addr,
            count,
            value: 0,
        };
        let data_len = self.transact(&req, &[])?;
        let data = self.rx.get(3..3 + data_len).unwrap_or(&[]);
        for (reg, bytes) in out.iter_mut().zip(data.chunks_exact(2)) {
            if let [hi, lo] = *bytes {
                *reg = u16::from_be_bytes([hi, lo]);
            }
        }
        Ok(())
    }

    /// 0x06, checking the echo.
    pub fn write_register(&mut self, unit: u8, addr: u16, value: u16) -> Result<(), ModbusError> {
        let req = Request {
            unit,
            function: FN_WRITE_SINGLE,
            addr,
            count: 1,
            value,
        };
        self.transact(&req, &[]).map(|_| ())
    }

    /// 0x10, checking the echoed address and count.
    pub fn write_registers(
        &mut self,
        unit: u8,
        addr: u16,
        values: &[u16],
    ) -> Result<(), ModbusError> {
        let count = u16::try_from(values.len()).unwrap_or(u16::MAX);
        if count == 0 || count > MAX_WRITE_REGISTERS {
            return Err(ModbusError::Malformed("write count outside 1..=123"));
        }
        let req = Request {
            unit,
            function: FN_WRITE_MULTIPLE,
            addr,
            count,
            value: 0,
        };
        self.transact(&req, values).map(|_| ())
    }

    /// Caps the response timeout of `unit` (e.g. short while probing a lost unit); None lifts it.
    pub fn set_timeout_cap(&mut self, unit: u8, cap: Option<Duration>) {
        self.units[usize::from(unit)].timeout_cap = cap;
    }

    pub fn stats(&self, unit: u8) -> UnitStats {
        self.units[usize::from(unit)].stats
    }

    /// The response timeout `unit` would get now for a request and reply of these lengths.
    pub fn current_timeout(&self, unit: u8, request_len: usize, response_len: usize) -> Duration {
        let u = &self.units[usize::from(unit)];
        response_timeout(
            u.stats.turnaround_estimate,
            u.timeout_cap,
            self.wire_time(request_len),
            self.wire_time(response_len),
        )
    }

    pub fn wire_time(&self, bytes: usize) -> Duration {
        self.settings.wire_time(bytes)
    }

    /// One transaction; on success the reply frame is at the start of `self.rx` and the
    /// returned value is the number of register data bytes (reads) or 0 (writes).
    fn transact(&mut self, req: &Request, values: &[u16]) -> Result<usize, ModbusError> {
        req.encode(values, &mut self.tx)?;
        let stale = self.wait_silence_and_discard_stale()?;
        let started = Instant::now();
        let unit = usize::from(req.unit);
        let result = self.send_and_receive(req);
        let state = &mut self.units[unit];
        let stats = &mut state.stats;
        stats.stale_bytes += stale;
        stats.requests += 1;
        stats.bytes_out += self.tx.as_bytes().len() as u64;
        stats.bus_time += started.elapsed();
        match result {
            Ok(outcome) => {
                stats.bytes_in += outcome.bytes_in as u64;
                stats.stale_bytes += outcome.skipped as u64;
                if req.unit != BROADCAST {
                    stats.last_turnaround = Some(outcome.turnaround);
                    stats.turnaround_estimate =
                        next_turnaround_estimate(stats.turnaround_estimate, outcome.turnaround);
                }
                Ok(outcome.data_len)
            }
            Err((e, bytes_in)) => {
                stats.bytes_in += bytes_in as u64;
                stats.errors[e.kind().index()] += 1;
                if matches!(e, ModbusError::Timeout) {
                    stats.turnaround_estimate =
                        widened_turnaround_estimate(stats.turnaround_estimate);
                } else if !matches!(e, ModbusError::Io(_) | ModbusError::Exception { .. }) {
                    // Whatever follows a bad frame must not be taken for the next reply.
                    let drained = self.drain_until_quiet();
                    self.units[unit].stats.stale_bytes += drained;
                }
                Err(e)
            }
        }
    }

    /// Keeps ≥ 3.5 characters of silence since the last frame, then throws away anything
    /// pending (a late reply to an earlier request must never be taken for this one).
    fn wait_silence_and_discard_stale(&mut self) -> Result<u64, ModbusError> {
        let silence = self.settings.frame_silence();
        let port = self.port.as_mut().ok_or_else(port_closed)?;
        let mut discarded = 0u64;
        // Bounded: a babbling line cannot hold the master here forever.
        for _ in 0..8 {
            let ready = self.line_quiet_since + silence;
            let now = Instant::now();
            if now < ready {
                std::thread::sleep(ready - now);
            }
            let pending = port.bytes_to_read()?;
            if pending == 0 {
                break;
            }
            discarded += u64::from(pending);
            port.clear(ClearBuffer::Input)?;
            self.line_quiet_since = Instant::now();
        }
        Ok(discarded)
    }

    fn send_and_receive(&mut self, req: &Request) -> Result<Received, (ModbusError, usize)> {
        let frame = self.tx.as_bytes();
        let port = self.port.as_mut().ok_or_else(|| (port_closed(), 0))?;
        port.write_all(frame).map_err(|e| (e.into(), 0))?;
        // On a real UART tcdrain returns once the bytes are on the wire.
        port.flush().map_err(|e| (e.into(), 0))?;
        let sent = Instant::now();
        self.line_quiet_since = sent;
        if req.unit == BROADCAST {
            // Nobody answers a broadcast write; give the devices time to execute it before
            // the next request (the spec's "turnaround delay").
            self.line_quiet_since = sent + BROADCAST_TURNAROUND;
            return Ok(Received {
                data_len: 0,
                bytes_in: 0,
                skipped: 0,
                turnaround: Duration::ZERO,
            });
        }
        let timeout = {
            let u = &self.units[usize::from(req.unit)];
            response_timeout(
                u.stats.turnaround_estimate,
                u.timeout_cap,
                self.settings.wire_time(frame.len()),
                self.settings.wire_time(req.response_len()),
            )
        };
        let result = self.receive(req, sent, sent + timeout);
        self.line_quiet_since = Instant::now();
        result
    }

    /// Reads exactly one reply for `req`, skipping complete CRC-valid frames that cannot be
    /// its reply (late replies to earlier requests).
    fn receive(
        &mut self,
        req: &Request,
        sent: Instant,
        deadline: Instant,
    ) -> Result<Received, (ModbusError, usize)> {
        let port = self.port.as_mut().ok_or_else(|| (port_closed(), 0))?;
        let expected_len = req.response_len();
        let exception_fn = req.function | 0x80;
        let mut len = 0usize;
        let mut bytes_in = 0usize;
        let mut skipped = 0usize;
        let mut first_byte: Option<Instant> = None;
        // A skipped frame from another unit: reported as WrongUnit if nothing of ours follows.
        let mut other_unit: Option<u8> = None;
        loop {
            while let Some(stale_len) = foreign_frame_len(req, self.rx.get(..len).unwrap_or(&[])) {
                if let Some(&unit) = self.rx.first()
                    && unit != req.unit
                {
                    other_unit = Some(unit);
                }
                self.rx.copy_within(stale_len..len, 0);
                len -= stale_len;
                skipped += stale_len;
                // The reply proper starts now (or with the next byte).
                first_byte = (len > 0).then(Instant::now);
            }
            let head = self.rx.get(..len).unwrap_or(&[]);
            let need = if head.get(1) == Some(&exception_fn) {
                5
            } else {
                expected_len
            };
            if len >= need {
                let frame = self.rx.get(..need).unwrap_or(&[]);
                let turnaround = first_byte.unwrap_or(sent).duration_since(sent);
                match parse_response(req, frame) {
                    Ok(response) => {
                        let data_len = match response {
                            Response::Registers(data) => data.len(),
                            Response::WriteAck => 0,
                        };
                        return Ok(Received {
                            data_len,
                            bytes_in,
                            skipped,
                            turnaround,
                        });
                    }
                    Err(e) => {
                        // A longer frame may be arriving (a stale reply to a bigger read):
                        // read it whole before judging, so it can be skipped.
                        let longer = reply_frame_len(frame).is_some_and(|n| n > len);
                        if !longer {
                            return Err((e, bytes_in));
                        }
                    }
                }
            }
            // Read up to what this reply needs, or up to the end of a possibly stale frame.
            let want = reply_frame_len(head)
                .unwrap_or(need)
                .max(need)
                .min(MAX_FRAME);
            let now = Instant::now();
            // A line that keeps delivering (skipped frames, noise) cannot hold us past this.
            if now > deadline + MAX_INTER_BYTE_GAP + self.settings.wire_time(MAX_FRAME) {
                return Err((ModbusError::Malformed("reply overran its time"), bytes_in));
            }
            let wait = if len == 0 {
                deadline.saturating_duration_since(now)
            } else {
                deadline
                    .saturating_duration_since(now)
                    .max(Duration::from_millis(1))
                    .min(MAX_INTER_BYTE_GAP)
            };
            let timeout = || match other_unit {
                Some(got) => ModbusError::WrongUnit {
                    expected: req.unit,
                    got,
                },
                None => ModbusError::Timeout,
            };
            if wait.is_zero() {
                return Err((timeout(), bytes_in));
            }
            port.set_timeout(wait).map_err(|e| (e.into(), bytes_in))?;
            let dest = match self.rx.get_mut(len..want) {
                Some(d) if !d.is_empty() => d,
                _ => return Err((ModbusError::Malformed("frame too long"), bytes_in)),
            };
            match port.read(dest) {
                Ok(0) => {
                    return Err((
                        ModbusError::Io(std::io::ErrorKind::UnexpectedEof.into()),
                        bytes_in,
                    ));
                }
                Ok(n) => {
                    if len == 0 {
                        first_byte = Some(Instant::now());
                    }
                    len += n;
                    bytes_in += n;
                }
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    let e = if len == 0 {
                        timeout()
                    } else if len >= need {
                        match parse_response(req, self.rx.get(..need).unwrap_or(&[])) {
                            Err(e) => e,
                            Ok(_) => ModbusError::Malformed("unexpected"),
                        }
                    } else {
                        ModbusError::Malformed("truncated frame")
                    };
                    return Err((e, bytes_in));
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err((ModbusError::Io(e), bytes_in)),
            }
        }
    }

    /// Reads and discards until the line has been quiet for a while (bounded).
    fn drain_until_quiet(&mut self) -> u64 {
        let started = Instant::now();
        let quiet = DRAIN_QUIET.max(self.settings.frame_silence() * 2);
        let mut drained = 0u64;
        let mut scratch = [0u8; 64];
        let Some(port) = self.port.as_mut() else {
            return 0;
        };
        while started.elapsed() < DRAIN_MAX {
            if port.set_timeout(quiet).is_err() {
                break;
            }
            match port.read(&mut scratch) {
                Ok(n) if n > 0 => drained += n as u64,
                _ => break,
            }
        }
        self.line_quiet_since = Instant::now();
        drained
    }
}

struct Received {
    data_len: usize,
    bytes_in: usize,
    skipped: usize,
    turnaround: Duration,
}

fn port_closed() -> ModbusError {
    ModbusError::Io(std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        "serial port closed (reopen failed)",
    ))
}

fn open_port(path: &str, settings: SerialSettings) -> Result<TTYPort, ModbusError> {
    let parity = match settings.parity {
        Parity::None => serialport::Parity::None,
        Parity::Even => serialport::Parity::Even,
    };
    let opened = serialport::new(path, settings.baud)
        .data_bits(serialport::DataBits::Eight)
        .stop_bits(serialport::StopBits::One)
        .parity(parity)
        .flow_control(serialport::FlowControl::None)
        .timeout(TIMEOUT_FLOOR)
        .open_native();
    match opened {
        Ok(port) => Ok(port),
        // ENOSYS; serialport reports it as an unknown error with the errno's text.
        Err(e) if e.description.contains("not implemented") => open_without_line_settings(path),
        Err(e) => Err(e.into()),
    }
}

/// serialport sets the line through termios2 (TCGETS2), which qemu-user 7.2 does not emulate
/// (ENOSYS): the armv7 smoke test runs the daemon under it. Real kernels never take this path.
/// The line is used as it is, which is right for the simulator's pty (already raw).
fn open_without_line_settings(path: &str) -> Result<TTYPort, ModbusError> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    use std::os::unix::fs::OpenOptionsExt;
    const O_NOCTTY: i32 = 0o400;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(O_NOCTTY)
        .open(path)?;
    log::warn!(
        "{path}: line settings not supported by the kernel (qemu-user?); using the line as it is"
    );
    // SAFETY: the fd was just opened and is owned by nothing else.
    let mut port = unsafe { TTYPort::from_raw_fd(file.into_raw_fd()) };
    port.set_timeout(TIMEOUT_FLOOR)?;
    Ok(port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_time_at_9600() {
        let s = SerialSettings::default();
        assert_eq!(
            s.wire_time(41),
            Duration::from_nanos(41 * 10 * 1_000_000_000 / 9600)
        );
        let even = SerialSettings {
            parity: Parity::Even,
            ..s
        };
        assert!(even.wire_time(10) > s.wire_time(10));
        // 3.5 characters at 9600 8N1 = 3.646 ms.
        assert_eq!(s.frame_silence().as_micros(), 3645);
        let fast = SerialSettings {
            baud: 115200,
            parity: Parity::None,
        };
        assert_eq!(fast.frame_silence(), Duration::from_micros(1750));
    }

    #[test]
    fn turnaround_estimate_jumps_up_and_decays_slowly() {
        let e = next_turnaround_estimate(Duration::from_millis(20), Duration::from_millis(40));
        assert_eq!(e, Duration::from_millis(40));
        let e = next_turnaround_estimate(Duration::from_millis(40), Duration::from_millis(8));
        assert_eq!(e, Duration::from_millis(36));
        let e = next_turnaround_estimate(Duration::from_millis(40), Duration::from_secs(5));
        assert_eq!(e, MAX_TURNAROUND_ESTIMATE);
        assert_eq!(
            widened_turnaround_estimate(MAX_TURNAROUND_ESTIMATE),
            MAX_TURNAROUND_ESTIMATE
        );
    }

    #[test]
    fn timeout_has_a_floor_scales_with_turnaround_and_honours_the_cap() {
        let wire = Duration::from_millis(10);
        let t = response_timeout(Duration::from_millis(5), None, wire, wire);
        assert_eq!(t, TIMEOUT_FLOOR + 2 * wire);
        let t = response_timeout(Duration::from_millis(50), None, wire, wire);
        assert_eq!(t, Duration::from_millis(170));
        let t = response_timeout(
            Duration::from_millis(50),
            Some(Duration::from_millis(30)),
            wire,
            wire,
        );
        assert_eq!(t, Duration::from_millis(30));
        // Never multi-second, whatever the unit did.
        let worst = response_timeout(
            MAX_TURNAROUND_ESTIMATE,
            None,
            wire,
            Duration::from_millis(274),
        );
        assert!(worst < Duration::from_millis(1100));
    }

    #[test]
    fn error_kinds_are_distinct() {
        let errors = [
            ModbusError::Timeout,
            ModbusError::Crc,
            ModbusError::Malformed("x"),
            ModbusError::WrongUnit {
                expected: 1,
                got: 2,
            },
            ModbusError::Exception {
                function: 3,
                code: 2,
            },
            ModbusError::Io(std::io::ErrorKind::BrokenPipe.into()),
        ];
        for (e, kind) in errors.iter().zip(ErrorKind::ALL) {
            assert_eq!(e.kind(), kind);
            assert_eq!(
                kind.index(),
                ErrorKind::ALL.iter().position(|k| *k == kind).unwrap()
            );
            assert!(!e.to_string().is_empty());
        }
    }
}
