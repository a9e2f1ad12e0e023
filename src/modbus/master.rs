//! The RTU master: one transaction at a time over a [`Line`], in steps a poll loop can drive.
//!
//! A transaction goes through three phases:
//! 1. **waiting for the line**: the request may go once the line has been quiet for 3.5
//!    characters (or the unit's own longer silence) and the unit's minimum interval since its
//!    last request has passed ([`RtuMaster::ready_at`]); input arriving meanwhile is stale (a late
//!    reply to an earlier request): it is read, counted and thrown away, and the silence counted
//!    again from its end;
//! 2. **receiving**: the request is sent and the [`Assembler`] fed whatever arrives until it
//!    has the reply or a deadline decides;
//! 3. **draining** after a reply that could not be trusted (CRC, garbage, another unit): the line
//!    is read until it has been quiet for a while, so its tail is not taken for the next reply.
//!
//! A unit's minimum interval between commands ([`UnitPacing::interval`]) is counted from the end
//! of its previous exchange (its reply, its timeout or the drain after a bad reply), not from the
//! previous request: the device then never sees two commands closer than the interval, whatever
//! the latency of the adapter or of the process that sends them.
//!
//! [`RtuMaster::start`] begins one; [`RtuMaster::advance`] does whatever is due now, without
//! blocking, and says when it needs to be called again ([`Step::Wait`]: at that instant or as
//! soon as the line is readable, whichever is first) or how it ended ([`Step::Done`]). The main
//! loop polls [`RtuMaster::raw_fd`] with its other fds until [`RtuMaster::next_deadline`]; the
//! blocking methods (`read_registers`, `write_register`, …) run the same steps and wait on the
//! line themselves. No heap allocation per transaction.

use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use serialport::TTYPort;

use super::assembler::{Assembler, Progress, Received};
use super::frame::{Expected, FrameBuf, MAX_FRAME};
use super::line::open_port;
use super::request::BROADCAST;
use super::{ErrorKind, InvalidRequest, Line, ModbusError, ReadFunction, Request, SerialSettings};

const BROADCAST_TURNAROUND: Duration = Duration::from_millis(100);
/// Turnaround assumed before a unit has answered once.
const INITIAL_TURNAROUND: Duration = Duration::from_millis(100);
/// The estimate never exceeds this, so a timeout stays well under a second plus wire time.
const MAX_TURNAROUND_ESTIMATE: Duration = Duration::from_millis(150);
/// The response timeout never drops below this (OS and USB adapter latencies).
const TIMEOUT_FLOOR: Duration = Duration::from_millis(100);
const TIMEOUT_PER_TURNAROUND: u32 = 3;
/// After a bad frame: keep reading until the line is quiet this long (bounded overall).
const DRAIN_QUIET: Duration = Duration::from_millis(20);
const DRAIN_MAX: Duration = Duration::from_millis(500);
/// Reads per `advance`: a line flooding faster than it is read cannot hold the caller.
const MAX_READS_PER_STEP: usize = 16;

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

/// A unit's own pace on top of the line's 3.5-character silence: the device's documented
/// timing, set by whoever knows the device (both zero until then).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnitPacing {
    /// Silence on the line before a request to this unit (Eastron asks for 60 ms before a
    /// request to the SDM230).
    pub silence: Duration,
    /// Minimum time from the end of one exchange with this unit (its reply or timeout) to the
    /// next request to it (Growatt documents 850 ms between commands).
    pub interval: Duration,
}

/// How a transaction ended well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// A read: its registers are in [`RtuMaster::reply_registers`].
    Registers { count: u16 },
    /// A write, echoed correctly (or a broadcast, which nobody answers).
    Written,
}

/// What [`RtuMaster::advance`] did.
#[derive(Debug)]
#[must_use]
pub enum Step {
    /// No transaction in flight.
    Idle,
    /// In flight: call `advance` again at `until`, or as soon as the line is readable.
    Wait { until: Instant },
    /// Finished; the next transaction may start.
    Done(Result<Reply, ModbusError>),
}

#[derive(Debug, Clone, Copy)]
struct UnitState {
    stats: UnitStats,
    timeout_cap: Option<Duration>,
    pacing: UnitPacing,
    /// When the last exchange with this unit ended (reply, timeout, drain, or the request itself
    /// for a broadcast or a failed send).
    last_done: Option<Instant>,
}

impl Default for UnitState {
    fn default() -> Self {
        Self {
            stats: UnitStats {
                turnaround_estimate: INITIAL_TURNAROUND,
                ..UnitStats::default()
            },
            timeout_cap: None,
            pacing: UnitPacing::default(),
            last_done: None,
        }
    }
}

enum Phase {
    Idle,
    /// The request is encoded; it goes when the line and the unit are ready.
    Waiting {
        expected: Expected,
        /// Set by the first stale input: a line that never goes quiet cannot hold the
        /// request past this.
        babble_until: Option<Instant>,
    },
    /// Sent at `started` (its first byte); the assembler has the rest.
    Receiving {
        started: Instant,
    },
    /// The reply failed with `error`; reading the line until it is quiet before saying so.
    Draining {
        unit: u8,
        error: ModbusError,
        since: Instant,
        last_byte: Instant,
    },
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

fn port_closed() -> ModbusError {
    ModbusError::Io(std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        "serial port closed (reopen failed)",
    ))
}

pub struct RtuMaster<L: Line = TTYPort> {
    /// None only between a failed reopen and the next successful one.
    line: Option<L>,
    path: Option<String>,
    settings: SerialSettings,
    /// End of the last frame seen or sent on the line.
    line_quiet_since: Instant,
    units: Box<[UnitState; 256]>,
    tx: FrameBuf,
    phase: Phase,
    rx: Assembler,
    /// How the last transaction ended well (None while one is in flight or after a failure).
    reply: Option<Reply>,
    /// The instant of the last `Step::Wait`.
    wake_at: Option<Instant>,
    /// The unit of the transaction in flight (or of the last one).
    current_unit: u8,
}

impl RtuMaster<TTYPort> {
    /// Opens `path` (any path, symlinks such as /dev/serial/by-id included), 8 data bits, 1 stop.
    pub fn open(path: &str, settings: SerialSettings) -> Result<Self, ModbusError> {
        let port = open_port(path, settings)?;
        let mut master = Self::from_port(port, settings);
        master.path = Some(path.to_string());
        Ok(master)
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
        self.line = None;
        self.phase = Phase::Idle;
        self.wake_at = None;
        let mut port = open_port(&path, self.settings)?;
        port.prepare()?;
        self.line_quiet_since = port.now();
        self.line = Some(port);
        Ok(())
    }
}

impl<L: Line + AsRawFd> RtuMaster<L> {
    /// The line's fd for the caller's poll (POLLIN) while a transaction is in flight; None while
    /// the port is closed. Between transactions input is left for the next one to discard.
    pub fn raw_fd(&self) -> Option<RawFd> {
        self.line.as_ref().map(AsRawFd::as_raw_fd)
    }
}

impl<L: Line> RtuMaster<L> {
    /// Wraps an open line (e.g. one end of `TTYPort::pair()`, or a scripted line); `reopen`
    /// needs a path, so it fails on such a master. The line's settings are left as they are.
    pub fn from_port(mut line: L, settings: SerialSettings) -> Self {
        if let Err(e) = line.prepare() {
            log::warn!("serial line: cannot make it non-blocking: {e}");
        }
        let now = line.now();
        // Until the first request the assembler holds no reply (`reply` is None).
        let nothing = Request::WriteSingle {
            unit: BROADCAST,
            addr: 0,
            value: 0,
        }
        .expected();
        Self {
            line: Some(line),
            path: None,
            settings,
            line_quiet_since: now,
            units: Box::new([UnitState::default(); 256]),
            tx: FrameBuf::default(),
            phase: Phase::Idle,
            rx: Assembler::new(nothing, now, Duration::ZERO, Duration::ZERO),
            reply: None,
            wake_at: None,
            current_unit: BROADCAST,
        }
    }

    pub fn settings(&self) -> SerialSettings {
        self.settings
    }

    /// Caps the response timeout of `unit` (e.g. short while probing a lost unit); None lifts it.
    pub fn set_timeout_cap(&mut self, unit: u8, cap: Option<Duration>) {
        self.units[usize::from(unit)].timeout_cap = cap;
    }

    /// Sets the pace `unit` needs (kept across reopens).
    pub fn set_pacing(&mut self, unit: u8, pacing: UnitPacing) {
        self.units[usize::from(unit)].pacing = pacing;
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

    /// The earliest instant a request to `unit` may go, as things stand: the line quiet for
    /// 3.5 characters (or the unit's longer silence) and the unit's interval since its last
    /// exchange passed. Stale input arriving before then moves it.
    pub fn ready_at(&self, unit: u8) -> Instant {
        self.send_time(unit, None)
    }

    /// True from `start` until `advance` says `Done`.
    pub fn in_flight(&self) -> bool {
        !matches!(self.phase, Phase::Idle)
    }

    /// When the transaction in flight needs `advance` at the latest (None when idle).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.wake_at
    }

    /// Begins a transaction: checks and encodes `request`; nothing is sent before `advance`.
    /// Refused (not counted) for an invalid request, one already in flight, a closed port.
    pub fn start(&mut self, request: &Request<'_>) -> Result<(), ModbusError> {
        if self.in_flight() {
            return Err(InvalidRequest::InFlight.into());
        }
        request.encode(&mut self.tx)?;
        if self.line.is_none() {
            return Err(port_closed());
        }
        self.reply = None;
        self.current_unit = request.unit();
        self.wake_at = Some(self.ready_at(request.unit()));
        self.phase = Phase::Waiting {
            expected: request.expected(),
            babble_until: None,
        };
        Ok(())
    }

    /// Does what is due now without blocking: discards stale input, sends the request once the
    /// line is ready, feeds the reply's bytes to the assembler, keeps the deadlines.
    pub fn advance(&mut self) -> Step {
        let step = match std::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::Idle => Step::Idle,
            Phase::Waiting {
                expected,
                babble_until,
            } => self.wait_for_line(expected, babble_until),
            Phase::Receiving { started } => self.receive(started),
            Phase::Draining {
                unit,
                error,
                since,
                last_byte,
            } => self.drain(unit, error, since, last_byte),
        };
        self.wake_at = match step {
            Step::Wait { until } => Some(until),
            Step::Idle | Step::Done(_) => None,
        };
        if let Step::Done(result) = &step {
            if let Ok(reply) = result {
                self.reply = Some(*reply);
            }
            let end = self.line.as_ref().map(Line::now);
            self.units[usize::from(self.current_unit)].last_done = end;
        }
        step
    }

    /// The registers of the last successful read (none after anything else), until the next
    /// `start`.
    pub fn reply_registers(&self) -> impl ExactSizeIterator<Item = u16> + '_ {
        let data = match self.reply {
            Some(Reply::Registers { .. }) => self.rx.register_data(),
            _ => &[],
        };
        data.chunks_exact(2).map(|pair| match *pair {
            [hi, lo] => u16::from_be_bytes([hi, lo]),
            _ => 0,
        })
    }

    /// One whole transaction, waiting on the line (identification, `--probe`, tests).
    pub fn transact(&mut self, request: &Request<'_>) -> Result<Reply, ModbusError> {
        self.start(request)?;
        loop {
            match self.advance() {
                Step::Done(result) => return result,
                Step::Idle => return Err(port_closed()),
                Step::Wait { until } => {
                    let waited = match self.line.as_mut() {
                        Some(line) => line.wait(until),
                        None => Err(std::io::ErrorKind::NotConnected.into()),
                    };
                    if let Err(e) = waited {
                        return self.abort(ModbusError::Io(e));
                    }
                }
            }
        }
    }

    /// Reads `out.len()` (1..=125) registers starting at `addr`.
    pub fn read_registers(
        &mut self,
        unit: u8,
        f: ReadFunction,
        addr: u16,
        out: &mut [u16],
    ) -> Result<(), ModbusError> {
        let count = u16::try_from(out.len()).map_err(|_| InvalidRequest::ReadCount(out.len()))?;
        self.transact(&Request::read(f, unit, addr, count))?;
        for (reg, value) in out.iter_mut().zip(self.reply_registers()) {
            *reg = value;
        }
        Ok(())
    }

    /// 0x06, checking the echo.
    pub fn write_register(&mut self, unit: u8, addr: u16, value: u16) -> Result<(), ModbusError> {
        self.transact(&Request::WriteSingle { unit, addr, value })
            .map(|_| ())
    }

    /// 0x10, checking the echoed address and count.
    pub fn write_registers(
        &mut self,
        unit: u8,
        addr: u16,
        values: &[u16],
    ) -> Result<(), ModbusError> {
        self.transact(&Request::WriteMultiple { unit, addr, values })
            .map(|_| ())
    }

    /// The line itself, for tests to script and inspect.
    #[cfg(test)]
    pub(crate) fn line_mut(&mut self) -> &mut L {
        self.line.as_mut().expect("line open")
    }

    /// When a request to `unit` may go; a line that babbled since the request was started
    /// cannot hold it past `babble_until`.
    fn send_time(&self, unit: u8, babble_until: Option<Instant>) -> Instant {
        let u = &self.units[usize::from(unit)];
        let silence = self.settings.frame_silence().max(u.pacing.silence);
        let mut line_ready = self.line_quiet_since + silence;
        if let Some(limit) = babble_until {
            line_ready = line_ready.min(limit);
        }
        match u.last_done {
            Some(last) => line_ready.max(last + u.pacing.interval),
            None => line_ready,
        }
    }

    fn wait_for_line(&mut self, expected: Expected, mut babble_until: Option<Instant>) -> Step {
        let Some(line) = self.line.as_mut() else {
            return Step::Done(Err(port_closed()));
        };
        let now = line.now();
        // Not counted: nothing was sent.
        let stale = match discard_input(line) {
            Ok(n) => n,
            Err(e) => return Step::Done(Err(e.into())),
        };
        if stale > 0 {
            self.units[usize::from(expected.unit)].stats.stale_bytes += stale;
            self.line_quiet_since = now;
            babble_until.get_or_insert(now + self.settings.wire_time(MAX_FRAME));
        }
        let ready = self.send_time(expected.unit, babble_until);
        if now < ready {
            self.phase = Phase::Waiting {
                expected,
                babble_until,
            };
            return Step::Wait { until: ready };
        }
        self.send(expected, now)
    }

    fn send(&mut self, expected: Expected, now: Instant) -> Step {
        let Some(line) = self.line.as_mut() else {
            return Step::Done(Err(port_closed()));
        };
        let frame = self.tx.as_bytes();
        let unit = usize::from(expected.unit);
        let state = &mut self.units[unit];
        state.stats.requests += 1;
        state.stats.bytes_out += frame.len() as u64;
        let sent = line.send(frame);
        // The line takes the frame at once; its last byte leaves a wire time later.
        let sent_at = line.now().max(now + self.settings.wire_time(frame.len()));
        self.line_quiet_since = sent_at;
        if let Err(e) = sent {
            state.stats.bus_time += sent_at.saturating_duration_since(now);
            state.stats.errors[ErrorKind::Io.index()] += 1;
            return Step::Done(Err(e.into()));
        }
        if expected.unit == BROADCAST {
            // Nobody answers a broadcast write; give the devices time to execute it before
            // the next request (the spec's "turnaround delay").
            state.stats.bus_time += sent_at.saturating_duration_since(now);
            self.line_quiet_since = sent_at + BROADCAST_TURNAROUND;
            return Step::Done(Ok(Reply::Written));
        }
        let timeout = response_timeout(
            state.stats.turnaround_estimate,
            state.timeout_cap,
            self.settings.wire_time(frame.len()),
            self.settings.wire_time(expected.reply_len()),
        );
        self.rx = Assembler::new(
            expected,
            sent_at,
            timeout,
            self.settings.wire_time(MAX_FRAME),
        );
        self.phase = Phase::Receiving { started: now };
        match self.rx.received(0, sent_at) {
            Progress::Pending { until } => Step::Wait { until },
            Progress::Complete(result) => self.finish(now, sent_at, result),
        }
    }

    fn receive(&mut self, started: Instant) -> Step {
        let Some(line) = self.line.as_mut() else {
            return self.finish(started, started, Err(port_closed()));
        };
        let mut now = line.now();
        for _ in 0..MAX_READS_PER_STEP {
            now = line.now();
            let n = match line.read_ready(self.rx.space()) {
                Ok(n) => n,
                Err(e) => return self.finish(started, now, Err(e.into())),
            };
            match self.rx.received(n, now) {
                Progress::Complete(result) => return self.finish(started, now, result),
                Progress::Pending { until } if n == 0 => {
                    self.phase = Phase::Receiving { started };
                    return Step::Wait { until };
                }
                Progress::Pending { .. } => {}
            }
        }
        // Still delivering: come back at once, after the caller's other work.
        self.phase = Phase::Receiving { started };
        Step::Wait { until: now }
    }

    /// Books the transaction's outcome; a reply that could not be trusted is followed by a
    /// drain before the error is returned.
    fn finish(
        &mut self,
        started: Instant,
        now: Instant,
        result: Result<Received, ModbusError>,
    ) -> Step {
        let unit = self.rx.unit();
        let stats = &mut self.units[usize::from(unit)].stats;
        stats.bus_time += now.saturating_duration_since(started);
        stats.bytes_in += self.rx.bytes_in() as u64;
        stats.stale_bytes += self.rx.skipped() as u64;
        self.line_quiet_since = now;
        match result {
            Ok(received) => {
                stats.last_turnaround = Some(received.turnaround);
                stats.turnaround_estimate =
                    next_turnaround_estimate(stats.turnaround_estimate, received.turnaround);
                let reply = match u16::try_from(received.data_len / 2) {
                    Ok(count) if count > 0 => Reply::Registers { count },
                    _ => Reply::Written,
                };
                Step::Done(Ok(reply))
            }
            Err(e) => {
                stats.errors[e.kind().index()] += 1;
                if matches!(e, ModbusError::Timeout) {
                    stats.turnaround_estimate =
                        widened_turnaround_estimate(stats.turnaround_estimate);
                }
                if e.leaves_line_dirty() {
                    // Whatever follows a bad frame must not be taken for the next reply.
                    self.drain(unit, e, now, now)
                } else {
                    Step::Done(Err(e))
                }
            }
        }
    }

    fn drain(&mut self, unit: u8, error: ModbusError, since: Instant, last_byte: Instant) -> Step {
        let Some(line) = self.line.as_mut() else {
            return Step::Done(Err(error));
        };
        let now = line.now();
        let last_byte = match discard_input(line) {
            Ok(0) => last_byte,
            Ok(n) => {
                self.units[usize::from(unit)].stats.stale_bytes += n;
                now
            }
            // The next transaction meets the failure.
            Err(_) => return Step::Done(Err(error)),
        };
        let quiet = DRAIN_QUIET.max(self.settings.frame_silence() * 2);
        let end = (last_byte + quiet).min(since + DRAIN_MAX);
        if now >= end {
            self.line_quiet_since = now;
            return Step::Done(Err(error));
        }
        self.phase = Phase::Draining {
            unit,
            error,
            since,
            last_byte,
        };
        Step::Wait { until: end }
    }

    /// Ends the transaction in flight with `error` (the line could not be waited on).
    fn abort(&mut self, error: ModbusError) -> Result<Reply, ModbusError> {
        self.wake_at = None;
        let now = self.line.as_ref().map(Line::now);
        self.units[usize::from(self.current_unit)].last_done = now;
        match std::mem::replace(&mut self.phase, Phase::Idle) {
            // Counted like any failed reply (an Io error leaves no drain behind).
            Phase::Receiving { started } => {
                match self.finish(started, now.unwrap_or(started), Err(error)) {
                    Step::Done(result) => result,
                    Step::Idle | Step::Wait { .. } => Err(port_closed()),
                }
            }
            // The reply's own failure says more.
            Phase::Draining { error, .. } => Err(error),
            Phase::Idle | Phase::Waiting { .. } => Err(error),
        }
    }
}

/// Reads and throws away whatever has arrived (bounded per call); returns how many bytes.
fn discard_input<L: Line>(line: &mut L) -> std::io::Result<u64> {
    let mut scratch = [0u8; 64];
    let mut discarded = 0u64;
    for _ in 0..MAX_READS_PER_STEP {
        let n = line.read_ready(&mut scratch)?;
        if n == 0 {
            break;
        }
        discarded += n as u64;
    }
    Ok(discarded)
}

#[cfg(test)]
mod tests;
