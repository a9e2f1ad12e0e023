//! One serial port and the units on it: identification, the bus schedule across units, and
//! reopening the port when it disappears. Modbus side of the main loop; no D-Bus here.
//!
//! The schedule, earliest due first:
//! - every unit has its pace on the bus (the RTU master holds each request until the unit's
//!   silence and minimum interval have passed); a unit is a candidate only once it is ready, so
//!   the master never holds a request that a fresher decision could replace;
//! - candidates are the limiter's pending write (due at once), probes of units that are not
//!   online (due every probe interval) and reads (due when their oldest register reaches its
//!   age; the limiter's inputs at the pace the app sets, [`FastPace`]);
//! - the candidate due earliest goes, unless a unit with more urgent work becomes ready before
//!   it would end: the bus then waits for that unit's slot, so a pending limit write waits for
//!   at most one interval of its unit, never for the other units' reads;
//! - identification and the inverter's set-up run device code that reads and writes one request
//!   at a time ([`UnitRegisters`]); while such a unit waits for its pace, the other units' due
//!   reads go on, and the caller serves D-Bus ([`Meanwhile`]).
//!
//! [`Port::poll`] never blocks outside such a session: it advances the transaction in flight or
//! starts the next one, and [`Port::next_wake`] / [`Port::fd`] tell the main loop when and on
//! what to wait.

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use crate::devices::Guard;
use crate::devices::{
    self, AccessError, IdentifyContext, Identity, MODELS, Recognition, RegisterReader,
    RegisterWriter,
};
use crate::devices::{Lifecycle, Timing, Transition};
use crate::modbus::{
    ErrorKind, ModbusError, Parity, ReadFunction, Reply, Request, RtuMaster, SerialSettings, Step,
    UnitPacing,
};
use crate::registers::{Access, Read, RegisterMap};

/// The line settings of a port at `baud`: 8N1, or 8E1 with `--even-parity`.
pub(super) fn serial_settings(even_parity: bool, baud: u32) -> SerialSettings {
    SerialSettings {
        baud,
        parity: if even_parity {
            Parity::Even
        } else {
            Parity::None
        },
    }
}

/// Timeout cap while probing a unit that is not online: a dead inverter costs the other units at
/// most this much, once per probe interval.
const PROBE_TIMEOUT: Duration = Duration::from_millis(150);
/// After failed reads in a row, an online unit waits this long before its next read, so a unit
/// that just died cannot take every other slot from the meter before it is declared lost.
const RETRY_AFTER_FAILURE: Duration = Duration::from_millis(400);
/// "Every few seconds": the limiter's inputs while it does not need them, at least.
const FEW_SECONDS: Duration = Duration::from_secs(2);
/// ... and at least this many of the unit's command intervals, so a slow pace keeps room for
/// the unit's other registers.
const FEW_SECONDS_IN_COMMANDS: u32 = 3;

/// "Every few seconds" for a unit whose commands are `interval` apart.
fn few_seconds(interval: Duration) -> Duration {
    FEW_SECONDS.max(interval * FEW_SECONDS_IN_COMMANDS)
}

/// The pause before the next read of a unit after `failures` failed reads in a row. None after a
/// single failure: one glitch on the meter (noise, a late reply) then costs one short timeout,
/// not 0.4 s of grid readings; a second failure in a row means the unit is dying.
fn retry_pause(failures: u8) -> Option<Duration> {
    (failures >= 2).then_some(RETRY_AFTER_FAILURE)
}
/// Units one port drives (an RS485 bus with more devices than this is not this product's case).
pub(super) const MAX_UNITS_PER_PORT: usize = 8;
/// A pending write and one probe or read per unit.
const MAX_CANDIDATES: usize = MAX_UNITS_PER_PORT + 1;
const REOPEN_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How often a unit's `Fast` registers (the limiter's inputs) are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum FastPace {
    /// As often as the unit's pace and the bus allow: the limiter is using them.
    AsAllowed,
    /// One read completing every this long (the publish interval).
    Every(Duration),
    /// Every few seconds (an inverter's output while the limiter does not limit it).
    EveryFewSeconds,
}

/// What the caller does while a unit's session (identification, set-up) waits on the bus: it
/// serves D-Bus and publishes what the port's other units read meanwhile. It must return at
/// `until` at the latest, or as soon as `fd` (the serial line) is readable.
pub(super) trait Meanwhile {
    fn wait(&mut self, port: &Port, until: Option<Instant>, fd: Option<RawFd>);
}

/// Waits on the serial line only (tests of the port): nothing else to serve.
#[cfg(test)]
struct JustWait;

#[cfg(test)]
impl Meanwhile for JustWait {
    fn wait(&mut self, _port: &Port, until: Option<Instant>, fd: Option<RawFd>) {
        wait_for_line(fd, until);
    }
}

/// ppoll on `fd` (if any) until `until` (if any); errors and signals end the wait early, the
/// caller's loop re-checks.
#[cfg(test)]
fn wait_for_line(fd: Option<RawFd>, until: Option<Instant>) {
    let mut pfd = libc::pollfd {
        fd: fd.unwrap_or(-1),
        events: libc::POLLIN,
        revents: 0,
    };
    let left = until.map_or(Duration::from_secs(1), |t| {
        t.saturating_duration_since(Instant::now())
    });
    // SAFETY: a timespec is plain data; all-zero is a valid value.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    ts.tv_sec = libc::time_t::try_from(left.as_secs()).unwrap_or(libc::time_t::MAX);
    // Below 10^9: fits a c_long of any width.
    ts.tv_nsec = left.subsec_nanos() as libc::c_long;
    // SAFETY: one pollfd (a negative fd is ignored by the kernel), a valid timespec, no mask.
    unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
}

/// The pace of a unit of `model` on the bus (None: not identified yet, so the strictest of every
/// supported model: whatever answers there is respected), with the command line's interval if
/// one was given.
pub(super) fn unit_pacing(
    model: Option<&devices::Model>,
    interval_override: Option<Duration>,
) -> UnitPacing {
    let timing = |m: &devices::Model| (m.bus.silence_before_request, m.bus.min_command_interval);
    let (silence, interval) = match model {
        Some(m) => timing(m),
        None => MODELS
            .iter()
            .map(|m| timing(m))
            .fold((Duration::ZERO, Duration::ZERO), |(s, i), (ms, mi)| {
                (s.max(ms), i.max(mi))
            }),
    };
    UnitPacing {
        silence,
        interval: interval_override.unwrap_or(interval),
    }
}

pub(super) struct Unit {
    pub id: u8,
    pub lifecycle: Lifecycle,
    pub identity: Option<Identity>,
    pub map: Option<RegisterMap>,
    /// Earliest time of the next read after failures in a row.
    retry_at: Option<Instant>,
    /// Failed reads in a row.
    failures: u8,
    /// Why the unit is not driven, as last logged: each reason is logged once per
    /// identification episode, not per probe (empty: it answers as no supported model).
    refusal_logged: Option<String>,
    /// Plausibility of its readings; kept across lost/found (a new guard would accept any
    /// counter value as a first reading), replaced when another device answers at the address.
    guard: Option<Guard>,
    /// The unit's pace on the bus: its model's (the strictest of all models until it is
    /// identified), with the command line's interval if one was given.
    pacing: UnitPacing,
    /// `--command-interval` for this unit.
    interval_override: Option<Duration>,
    fast_pace: FastPace,
    /// How long the unit's last read took, request to reply: a read at the publish rate is
    /// planned this much early so that its result lands on time.
    last_read_time: Duration,
}

impl Unit {
    fn new(id: u8, timing: Timing, interval_override: Option<Duration>) -> Self {
        let mut unit = Unit {
            id,
            lifecycle: Lifecycle::new(timing),
            identity: None,
            map: None,
            retry_at: None,
            failures: 0,
            refusal_logged: None,
            guard: None,
            pacing: UnitPacing::default(),
            interval_override,
            fast_pace: FastPace::EveryFewSeconds,
            last_read_time: Duration::ZERO,
        };
        unit.pacing = unit.pacing_for(None);
        unit
    }

    fn pacing_for(&self, model: Option<&devices::Model>) -> UnitPacing {
        unit_pacing(model, self.interval_override)
    }

    /// The age at which the map plans its `Fast` registers, from the pace the app asked for.
    fn apply_fast_pace(&mut self) {
        // Planned early by what it takes to get a slot and make the read, so that readings
        // land once per period (what /RefreshTime says).
        let early = self.pacing.interval + self.last_read_time;
        let age = match self.fast_pace {
            FastPace::AsAllowed => None,
            FastPace::Every(period) => Some(period.saturating_sub(early)),
            FastPace::EveryFewSeconds => {
                Some(few_seconds(self.pacing.interval).saturating_sub(early))
            }
        };
        if let Some(map) = &mut self.map {
            map.set_fast_age(age);
        }
    }

    /// When the unit's next read is due and may start (retry pause included), if it is online.
    fn read_due(&self) -> Option<Instant> {
        if !self.lifecycle.is_online() {
            return None;
        }
        let due = self.map.as_ref()?.next_due()?;
        Some(self.retry_at.map_or(due, |r| due.max(r)))
    }
}

/// What one poll of the port did.
#[derive(Debug, PartialEq)]
pub(super) enum Event {
    /// Nothing was due (or the bus is kept for a unit about to be ready).
    Idle,
    /// A transaction is in flight.
    Busy,
    /// A unit was identified (or re-identified after being lost).
    Online(usize),
    /// A unit was lost (no good read for the lost timeout).
    Lost(usize),
    /// New values were stored for a unit; `fast` when the read included its fast registers.
    Read { unit: usize, fast: bool },
    /// A transaction failed (already counted and logged at debug).
    Failed(usize),
    /// A write to a unit completed (`Ok`) or failed.
    Wrote {
        unit: usize,
        addr: u16,
        value: u16,
        ok: bool,
    },
    /// The port is closed (disappeared); reopening is being retried.
    PortDown,
}

/// A limit write the app wants made: unit index, register, value.
pub(super) type Write = (usize, u16, u16);

/// The transaction in flight.
#[derive(Clone, Copy, Debug)]
enum Job {
    Read {
        unit: usize,
        read: Read,
        started: Instant,
    },
    Write {
        unit: usize,
        addr: u16,
        value: u16,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum What {
    Write { addr: u16, value: u16 },
    Probe,
    Read,
}

/// One thing the bus could do next, for one unit.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    unit: usize,
    what: What,
    due: Instant,
    /// When the unit's pace lets a request go.
    ready: Instant,
    /// How long it would hold the bus, roughly.
    takes: Duration,
}

impl Candidate {
    /// Earliest due first; at equal due times writes, then probes, then reads.
    fn urgency(&self) -> (Instant, u8) {
        let rank = match self.what {
            What::Write { .. } => 0,
            What::Probe => 1,
            What::Read => 2,
        };
        (self.due, rank)
    }
}

/// What the bus does next at `now`: the most urgent candidate that is due and ready, unless a
/// more urgent one becomes ready before it would end (then nothing: its slot is kept free).
/// Never a probe right after a failed transaction while a read is due: a silent unit then costs
/// the others at most one short timeout in a row.
fn choose(now: Instant, last_failed: bool, candidates: &[Candidate]) -> Option<Candidate> {
    let startable = |c: &&Candidate| c.due <= now && c.ready <= now;
    let read_due = candidates
        .iter()
        .filter(startable)
        .any(|c| c.what == What::Read);
    let best = candidates
        .iter()
        .filter(startable)
        .filter(|c| !(last_failed && read_due && c.what == What::Probe))
        .min_by_key(|c| c.urgency())?;
    let ends = now + best.takes;
    let keep_free = candidates.iter().any(|c| {
        c.unit != best.unit && c.urgency() < best.urgency() && c.ready > now && c.ready < ends
    });
    (!keep_free).then_some(*best)
}

/// What the command line tells identification (`--force-model`, `--rated-power`).
#[derive(Clone, Debug, Default)]
pub(super) struct IdentifyOverrides {
    pub forced: Vec<(String, u16)>,
    pub rated_power_w: Option<f64>,
}

impl IdentifyOverrides {
    pub(super) fn context(&self, unit: u8) -> IdentifyContext<'_> {
        IdentifyContext {
            unit,
            forced: &self.forced,
            rated_power_w: self.rated_power_w,
        }
    }
}

pub(super) struct Port {
    pub path: String,
    /// Applied to every identification on this port.
    pub overrides: IdentifyOverrides,
    settings: SerialSettings,
    master: Option<RtuMaster>,
    pub units: Vec<Unit>,
    job: Option<Job>,
    /// The last transaction failed (no reply, bad reply): the next slot goes to a read if any.
    last_failed: bool,
    max_transaction: Duration,
    reopen_at: Instant,
    reopen_backoff: Duration,
    buf: [u16; 125],
    /// Due time of work that is due at once (a pending write).
    epoch: Instant,
}

fn function(access: Access) -> ReadFunction {
    match access {
        Access::Holding => ReadFunction::Holding,
        Access::Input => ReadFunction::Input,
    }
}

impl Port {
    /// `intervals`: the command line's minimum interval per unit id.
    pub(super) fn new(
        path: &str,
        settings: SerialSettings,
        unit_ids: &[u8],
        timing: Timing,
        max_transaction: Duration,
        intervals: &dyn Fn(u8) -> Option<Duration>,
    ) -> Self {
        Port {
            path: path.to_string(),
            overrides: IdentifyOverrides::default(),
            settings,
            master: None,
            units: unit_ids
                .iter()
                .take(MAX_UNITS_PER_PORT)
                .map(|&id| Unit::new(id, timing, intervals(id)))
                .collect(),
            job: None,
            last_failed: false,
            max_transaction,
            reopen_at: Instant::now(),
            reopen_backoff: Duration::from_millis(500),
            buf: [0; 125],
            epoch: Instant::now(),
        }
    }

    /// Opens the port if it is closed and the back-off allows. `Ok(true)`: open; `Ok(false)`:
    /// closed, waiting for the next attempt; `Err`: this attempt failed.
    pub(super) fn ensure_open(&mut self, now: Instant) -> Result<bool, ModbusError> {
        if self.master.is_some() {
            return Ok(true);
        }
        if now < self.reopen_at {
            return Ok(false);
        }
        match RtuMaster::open(&self.path, self.settings) {
            Ok(mut m) => {
                info!("{}: opened at {} baud", self.path, self.settings.baud);
                for unit in &self.units {
                    m.set_pacing(unit.id, unit.pacing);
                    if !unit.lifecycle.is_online() {
                        m.set_timeout_cap(unit.id, Some(PROBE_TIMEOUT));
                    }
                }
                self.master = Some(m);
                self.job = None;
                self.reopen_backoff = Duration::from_millis(500);
                Ok(true)
            }
            Err(e) => {
                self.reopen_at = now + self.reopen_backoff;
                self.reopen_backoff = (self.reopen_backoff * 2).min(REOPEN_BACKOFF_MAX);
                Err(e)
            }
        }
    }

    /// How often unit `unit`'s `Fast` registers are read from now on.
    pub(super) fn set_fast_pace(&mut self, unit: usize, pace: FastPace) {
        if let Some(u) = self.units.get_mut(unit)
            && u.fast_pace != pace
        {
            u.fast_pace = pace;
            u.apply_fast_pace();
        }
    }

    /// How often unit `unit`'s `Fast` registers (a device's `/Ac/Power`) are read as its pace
    /// stands: what `/RefreshTime` tells (never shorter than the publish interval, applied by
    /// the caller).
    pub(super) fn fast_period(&self, unit: usize) -> Option<Duration> {
        let u = self.units.get(unit)?;
        Some(match u.fast_pace {
            FastPace::AsAllowed => u.pacing.interval,
            FastPace::Every(period) => period,
            FastPace::EveryFewSeconds => few_seconds(u.pacing.interval),
        })
    }

    /// The pace unit `unit` gets on the bus.
    pub(super) fn pacing(&self, unit: usize) -> Option<UnitPacing> {
        self.units.get(unit).map(|u| u.pacing)
    }

    /// The unit a limit write is in flight to, if one is.
    pub(super) fn writing(&self) -> Option<usize> {
        match self.job {
            Some(Job::Write { unit, .. }) => Some(unit),
            _ => None,
        }
    }

    /// The serial line to poll while a transaction is in flight.
    pub(super) fn fd(&self) -> Option<RawFd> {
        self.job.and(self.master.as_ref()?.raw_fd())
    }

    /// When the port needs [`poll`](Self::poll) again at the latest (a reply's deadline, a unit
    /// becoming ready for due work, a unit's loss timeout, the next reopen attempt).
    pub(super) fn next_wake(&self, now: Instant, write: Option<Write>) -> Option<Instant> {
        let lost = self
            .units
            .iter()
            .filter_map(|u| u.lifecycle.lost_deadline())
            .min();
        let Some(master) = &self.master else {
            return earliest(lost, Some(self.reopen_at));
        };
        if self.job.is_some() {
            return earliest(lost, master.next_deadline());
        }
        let (candidates, n) = self.candidates(now, write);
        // Whatever was startable was started by the last poll; a candidate still startable is
        // held for a more urgent one, whose own (future) time is the wake-up.
        let work = candidates[..n]
            .iter()
            .map(|c| c.due.max(c.ready))
            .filter(|&t| t > now)
            .min();
        earliest(lost, work)
    }

    /// Does what is due now without blocking (except inside a session, see [`Meanwhile`]):
    /// completes the transaction in flight, or starts the next one.
    pub(super) fn poll(
        &mut self,
        now: Instant,
        write: Option<Write>,
        meanwhile: &mut dyn Meanwhile,
    ) -> Event {
        let event = self.poll_once(now, write, meanwhile);
        match event {
            Event::Failed(_) => self.last_failed = true,
            Event::Read { .. } | Event::Online(_) | Event::Wrote { .. } => self.last_failed = false,
            Event::Idle | Event::Busy | Event::Lost(_) | Event::PortDown => {}
        }
        event
    }

    fn poll_once(
        &mut self,
        now: Instant,
        write: Option<Write>,
        meanwhile: &mut dyn Meanwhile,
    ) -> Event {
        // Lost units first, even with the port closed: their service must go as soon as the
        // timeout passes, so nothing stale is shown as live.
        for i in 0..self.units.len() {
            if self.units[i].lifecycle.check(now) == Some(Transition::Lost) {
                return self.lose(i);
            }
        }
        if self.master.is_none() {
            return Event::PortDown;
        }
        if self.job.is_some() {
            return self.advance_job();
        }
        let (candidates, n) = self.candidates(now, write);
        match choose(now, self.last_failed, &candidates[..n]) {
            None => Event::Idle,
            Some(c) => match c.what {
                What::Write { addr, value } => self.start_write(c.unit, addr, value),
                What::Probe => self.probe(c.unit, now, meanwhile),
                What::Read => self.start_read(c.unit, now),
            },
        }
    }

    /// What the bus could do at `now`, on the stack (no allocation per poll): the first `n`.
    fn candidates(
        &self,
        now: Instant,
        write: Option<Write>,
    ) -> ([Candidate; MAX_CANDIDATES], usize) {
        let mut out = [Candidate {
            unit: 0,
            what: What::Read,
            due: now,
            ready: now,
            takes: Duration::ZERO,
        }; MAX_CANDIDATES];
        let Some(master) = &self.master else {
            return (out, 0);
        };
        let char_time = self.settings.wire_time(1);
        // Request and reply on the wire plus the unit's turnaround.
        let takes = |id: u8, reply_bytes: u32| {
            char_time * (8 + reply_bytes) + master.stats(id).turnaround_estimate
        };
        let mut n = 0;
        if let Some((unit, addr, value)) = write
            && let Some(u) = self.units.get(unit)
        {
            out[n] = Candidate {
                unit,
                what: What::Write { addr, value },
                due: self.epoch,
                ready: master.ready_at(u.id),
                takes: takes(u.id, 8),
            };
            n += 1;
        }
        for (i, u) in self.units.iter().enumerate() {
            let (what, due) = match (u.lifecycle.probe_at(), u.read_due()) {
                (Some(probe), _) => (What::Probe, probe),
                (None, Some(read)) => (What::Read, read),
                (None, None) => continue,
            };
            // Its last read's duration, or a short read's (planning the read here would cost
            // more than the estimate is worth).
            let takes = match what {
                What::Read if !u.last_read_time.is_zero() => u.last_read_time,
                _ => takes(u.id, 9),
            };
            if let Some(slot) = out.get_mut(n) {
                *slot = Candidate {
                    unit: i,
                    what,
                    due,
                    ready: master.ready_at(u.id),
                    takes,
                };
                n += 1;
            }
        }
        (out, n)
    }

    fn start_read(&mut self, i: usize, now: Instant) -> Event {
        let Some(read) = self.units[i].map.as_ref().and_then(|m| m.next_read(now)) else {
            return Event::Idle;
        };
        let request = Request::read(
            function(read.access),
            self.units[i].id,
            read.addr,
            read.count,
        );
        self.start(
            &request,
            Job::Read {
                unit: i,
                read,
                started: now,
            },
        )
    }

    fn start_write(&mut self, i: usize, addr: u16, value: u16) -> Event {
        let request = Request::WriteSingle {
            unit: self.units[i].id,
            addr,
            value,
        };
        self.start(
            &request,
            Job::Write {
                unit: i,
                addr,
                value,
            },
        )
    }

    fn start(&mut self, request: &Request<'_>, job: Job) -> Event {
        let Some(master) = &mut self.master else {
            return Event::PortDown;
        };
        if let Err(e) = master.start(request) {
            self.job = Some(job);
            return self.complete(Err(e));
        }
        self.job = Some(job);
        self.advance_job()
    }

    /// Advances the transaction in flight; its outcome once it ends.
    fn advance_job(&mut self) -> Event {
        let Some(master) = &mut self.master else {
            self.job = None;
            return Event::PortDown;
        };
        match master.advance() {
            Step::Wait { .. } => Event::Busy,
            Step::Idle => {
                self.job = None;
                Event::Idle
            }
            Step::Done(result) => self.complete(result),
        }
    }

    /// Books the end of the transaction in flight.
    fn complete(&mut self, result: Result<Reply, ModbusError>) -> Event {
        let Some(job) = self.job.take() else {
            return Event::Idle;
        };
        match job {
            Job::Read {
                unit: i,
                read,
                started,
            } => self.read_done(i, read, started, result),
            Job::Write { unit, addr, value } => {
                let id = self.units[unit].id;
                let ok = result.is_ok();
                if let Err(e) = result {
                    warn!(
                        "{}: write of {value} to unit {id} register {addr} failed: {e}",
                        self.path
                    );
                    if self.on_error(&e) {
                        return Event::PortDown;
                    }
                }
                Event::Wrote {
                    unit,
                    addr,
                    value,
                    ok,
                }
            }
        }
    }

    fn read_done(
        &mut self,
        i: usize,
        read: Read,
        started: Instant,
        result: Result<Reply, ModbusError>,
    ) -> Event {
        let Some(master) = &mut self.master else {
            return Event::PortDown;
        };
        let unit = &mut self.units[i];
        match result {
            Ok(_) => {
                let done = Instant::now();
                let n = usize::from(read.count).min(self.buf.len());
                let words = &mut self.buf[..n];
                for (w, v) in words.iter_mut().zip(master.reply_registers()) {
                    *w = v;
                }
                if let Some(map) = &mut unit.map {
                    match &mut unit.guard {
                        Some(guard) => map
                            .store_filtered(&read, words, done, |reg, v, t| guard.check(reg, v, t)),
                        None => map.store(&read, words, done),
                    }
                }
                unit.lifecycle.read_ok(done);
                unit.last_read_time = done.saturating_duration_since(started);
                if read.fast {
                    unit.apply_fast_pace();
                }
                if unit.failures > 0 {
                    unit.failures = 0;
                    unit.retry_at = None;
                    master.set_timeout_cap(unit.id, None);
                }
                Event::Read {
                    unit: i,
                    fast: read.fast,
                }
            }
            Err(e) => {
                debug!(
                    "{}: unit {} read {:?} {}+{} failed: {e}",
                    self.path, unit.id, read.access, read.addr, read.count
                );
                // Keep a dying unit from stalling the bus: short timeout, and a pause once it
                // fails again.
                unit.failures = unit.failures.saturating_add(1);
                unit.retry_at = retry_pause(unit.failures).map(|d| Instant::now() + d);
                master.set_timeout_cap(unit.id, Some(PROBE_TIMEOUT));
                if self.on_error(&e) {
                    return Event::PortDown;
                }
                Event::Failed(i)
            }
        }
    }

    fn lose(&mut self, i: usize) -> Event {
        let unit = &mut self.units[i];
        unit.map = None;
        if let Some(master) = &mut self.master {
            master.set_timeout_cap(unit.id, Some(PROBE_TIMEOUT));
        }
        let name = unit.identity.as_ref().map_or("unit", |id| id.model.name);
        warn!(
            "{}: {} at unit {} lost (no valid reply for 5 s); probing",
            self.path, name, unit.id
        );
        Event::Lost(i)
    }

    fn on_error(&mut self, e: &ModbusError) -> bool {
        if let ModbusError::Io(err) = e {
            warn!(
                "{}: serial port failed: {err}; closing and reopening",
                self.path
            );
            self.master = None;
            self.job = None;
            return true;
        }
        false
    }

    /// Identifies unit `i`: an SDM230 answers its identification block; a Growatt answers that
    /// with an exception and its own block. A silent unit costs one short timeout.
    fn probe(&mut self, i: usize, now: Instant, meanwhile: &mut dyn Meanwhile) -> Event {
        let Some(master) = &mut self.master else {
            return Event::PortDown;
        };
        let id = self.units[i].id;
        master.set_timeout_cap(id, Some(PROBE_TIMEOUT));
        let result = {
            let overrides = self.overrides.clone();
            let mut regs = UnitRegisters::in_session(self, id, meanwhile);
            let found = identify_with(&mut regs, id, &overrides);
            found.map_err(|()| regs.error.take().unwrap_or(ModbusError::Timeout))
        };
        let char_time = self.settings.wire_time(1);
        let max_transaction = self.max_transaction;
        let now = Instant::now().max(now);
        let unit = &mut self.units[i];
        match result {
            Ok(Recognition::Found(identity)) => {
                unit.refusal_logged = None;
                if let Some(old) = &unit.identity
                    && old.serial != identity.serial
                {
                    info!(
                        "{}: unit {id} is now {} serial {} (was {})",
                        self.path, identity.model.name, identity.serial, old.serial
                    );
                }
                let model = identity.model;
                if unit
                    .identity
                    .as_ref()
                    .is_none_or(|old| old.serial != identity.serial)
                    || unit.guard.is_none()
                {
                    let guard = Guard::new(model.plausibility, model.registers)
                        .with_rated_power(identity.rated_power_w())
                        .with_label(identity.ident());
                    unit.guard = Some(guard);
                }
                let limits = model.limits.with_time_bound(char_time, max_transaction);
                unit.map = Some(RegisterMap::new(model.registers, limits));
                unit.pacing = unit.pacing_for(Some(model));
                unit.apply_fast_pace();
                unit.identity = Some(identity);
                unit.retry_at = None;
                unit.failures = 0;
                unit.lifecycle.identified(now);
                let pacing = unit.pacing;
                if let Some(master) = &mut self.master {
                    master.set_timeout_cap(id, None);
                    master.set_pacing(id, pacing);
                }
                Event::Online(i)
            }
            Ok(Recognition::Other) => {
                if unit.refusal_logged.as_deref() != Some("") {
                    warn!(
                        "{}: unit {id} answers but is not a supported model (see --models)",
                        self.path
                    );
                    unit.refusal_logged = Some(String::new());
                }
                unit.lifecycle.probe_failed(now);
                Event::Failed(i)
            }
            // Nothing is published and nothing written: the unit is probed like one that does
            // not answer, the reason logged once per episode.
            Ok(Recognition::Unsupported { why, .. }) => {
                if unit.refusal_logged.as_ref() != Some(&why) {
                    warn!("{}: unit {id}: {why}", self.path);
                    unit.refusal_logged = Some(why);
                }
                unit.lifecycle.probe_failed(now);
                Event::Failed(i)
            }
            Err(e) => {
                debug!("{}: probe of unit {id} failed: {e}", self.path);
                unit.lifecycle.probe_failed(now);
                if self.on_error(&e) {
                    return Event::PortDown;
                }
                Event::Failed(i)
            }
        }
    }

    /// Runs `f` on the registers of unit `unit` now, outside the schedule (the limiter's set-up
    /// and its last write on a clean stop), at the unit's pace; the other units' due reads go on
    /// while it waits. `None` when the port is closed or there is no such unit. A serial I/O
    /// error closes the port, as in the schedule.
    pub(super) fn with_unit<R>(
        &mut self,
        unit: usize,
        meanwhile: &mut dyn Meanwhile,
        f: impl FnOnce(&mut dyn RegisterWriter) -> R,
    ) -> Option<R> {
        let id = self.units.get(unit)?.id;
        self.master.as_ref()?;
        let (result, error) = {
            let mut regs = UnitRegisters::in_session(self, id, meanwhile);
            let result = f(&mut regs);
            (result, regs.error.take())
        };
        if let Some(e) = error {
            self.on_error(&e);
        }
        Some(result)
    }

    /// One transaction with unit `id` inside a session: waits for the bus and the unit's pace
    /// (starting the other units' due reads that end in time meanwhile), then runs it.
    fn session_transact(
        &mut self,
        id: u8,
        request: &Request<'_>,
        meanwhile: &mut dyn Meanwhile,
    ) -> Result<Reply, ModbusError> {
        loop {
            let now = Instant::now();
            if self.job.is_some() {
                if self.advance_job() == Event::Busy {
                    let until = self.master.as_ref().and_then(RtuMaster::next_deadline);
                    let fd = self.fd();
                    meanwhile.wait(self, until, fd);
                }
                continue;
            }
            let Some(master) = &self.master else {
                return Err(port_closed());
            };
            let ready = master.ready_at(id);
            if ready <= now {
                break;
            }
            match self.other_read(now, id, ready) {
                OtherRead::Started => {}
                OtherRead::At(t) => meanwhile.wait(self, Some(t.min(ready)), None),
                OtherRead::None => meanwhile.wait(self, Some(ready), None),
            }
        }
        let master = self.master.as_mut().ok_or_else(port_closed)?;
        master.start(request)?;
        loop {
            let master = self.master.as_mut().ok_or_else(port_closed)?;
            match master.advance() {
                Step::Done(result) => {
                    // Any valid answer shows the unit alive (a long set-up must not lose it).
                    if result.is_ok()
                        && let Some(unit) = self.units.iter_mut().find(|u| u.id == id)
                        && unit.lifecycle.is_online()
                    {
                        unit.lifecycle.read_ok(Instant::now());
                    }
                    return result;
                }
                Step::Idle => return Err(port_closed()),
                Step::Wait { until } => {
                    let fd = master.raw_fd();
                    meanwhile.wait(self, Some(until), fd);
                }
            }
        }
    }

    /// While unit `busy_id` waits for its pace until `by`: starts the most urgent due read of
    /// another unit that would end in time, or says when the next one could start.
    fn other_read(&mut self, now: Instant, busy_id: u8, by: Instant) -> OtherRead {
        let (candidates, n) = self.candidates(now, None);
        let others = candidates[..n]
            .iter()
            .filter(|c| c.what == What::Read && self.units[c.unit].id != busy_id);
        let startable = others
            .clone()
            .filter(|c| c.due <= now && c.ready <= now && now + c.takes <= by)
            .min_by_key(|c| c.urgency())
            .copied();
        let next = others
            .map(|c| c.due.max(c.ready))
            .filter(|&t| t > now)
            .min()
            .map_or(OtherRead::None, OtherRead::At);
        match startable {
            Some(c) if !matches!(self.start_read(c.unit, now), Event::Idle | Event::PortDown) => {
                OtherRead::Started
            }
            _ => next,
        }
    }
}

/// What a session can do for the other units while its own unit waits.
enum OtherRead {
    Started,
    /// The next one could start then.
    At(Instant),
    None,
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn port_closed() -> ModbusError {
    ModbusError::Io(std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        "serial port closed",
    ))
}

/// How [`UnitRegisters`] reaches the bus.
enum Bus<'a> {
    /// A bare master, waiting on the line itself (`--probe`).
    Master(&'a mut RtuMaster),
    /// A port's session: the other units' reads and the caller's D-Bus go on while it waits.
    Session {
        port: &'a mut Port,
        meanwhile: &'a mut dyn Meanwhile,
    },
}

/// One unit's registers through the master, as device code reads and writes them. Keeps the error
/// behind the last failure (a serial I/O error, once seen, sticks) so that the caller can react
/// to what device code only sees as an [`AccessError`]; device code logs failures in context.
pub(super) struct UnitRegisters<'a> {
    bus: Bus<'a>,
    unit: u8,
    error: Option<ModbusError>,
}

impl<'a> UnitRegisters<'a> {
    pub(super) fn new(master: &'a mut RtuMaster, unit: u8) -> Self {
        UnitRegisters {
            bus: Bus::Master(master),
            unit,
            error: None,
        }
    }

    fn in_session(port: &'a mut Port, unit: u8, meanwhile: &'a mut dyn Meanwhile) -> Self {
        UnitRegisters {
            bus: Bus::Session { port, meanwhile },
            unit,
            error: None,
        }
    }

    fn transact(&mut self, request: &Request<'_>) -> Result<Reply, ModbusError> {
        match &mut self.bus {
            Bus::Master(master) => master.transact(request),
            Bus::Session { port, meanwhile } => {
                port.session_transact(self.unit, request, &mut **meanwhile)
            }
        }
    }

    fn reply_into(&self, words: &mut [u16]) {
        let master = match &self.bus {
            Bus::Master(master) => Some(&**master),
            Bus::Session { port, .. } => port.master.as_ref(),
        };
        if let Some(master) = master {
            for (w, v) in words.iter_mut().zip(master.reply_registers()) {
                *w = v;
            }
        }
    }

    fn failed(&mut self, e: ModbusError) -> AccessError {
        let kind = if e.kind() == ErrorKind::Exception {
            AccessError::Refused
        } else {
            AccessError::NoAnswer
        };
        if self
            .error
            .as_ref()
            .is_none_or(|previous| previous.kind() != ErrorKind::Io)
        {
            self.error = Some(e);
        }
        kind
    }
}

impl RegisterReader for UnitRegisters<'_> {
    fn read(&mut self, access: Access, addr: u16, words: &mut [u16]) -> Result<(), AccessError> {
        let count = u16::try_from(words.len()).unwrap_or(u16::MAX);
        match self.transact(&Request::read(function(access), self.unit, addr, count)) {
            Ok(_) => {
                self.reply_into(words);
                Ok(())
            }
            Err(e) => {
                debug!(
                    "unit {} read {access:?} {addr}+{} failed: {e}",
                    self.unit,
                    words.len()
                );
                Err(self.failed(e))
            }
        }
    }
}

impl RegisterWriter for UnitRegisters<'_> {
    fn write(&mut self, addr: u16, value: u16) -> Result<(), AccessError> {
        let request = Request::WriteSingle {
            unit: self.unit,
            addr,
            value,
        };
        self.transact(&request).map(|_| ()).map_err(|e| {
            debug!(
                "unit {} write of {value} to register {addr} failed: {e}",
                self.unit
            );
            self.failed(e)
        })
    }
}

/// Identifies `unit`: the first supported model that recognises it, logged when found.
pub(super) fn identify(
    master: &mut RtuMaster,
    unit: u8,
    overrides: &IdentifyOverrides,
) -> Result<Recognition, ModbusError> {
    let mut regs = UnitRegisters::new(master, unit);
    identify_with(&mut regs, unit, overrides)
        .map_err(|()| regs.error.take().unwrap_or(ModbusError::Timeout))
}

/// `Err(())`: no valid answer; the adapter kept the error behind it.
fn identify_with(
    regs: &mut UnitRegisters<'_>,
    unit: u8,
    overrides: &IdentifyOverrides,
) -> Result<Recognition, ()> {
    match devices::identify(regs, &overrides.context(unit)) {
        Ok(found) => {
            if let Recognition::Found(id) = &found {
                info!(
                    "unit {unit}: {} serial {} ({})",
                    id.model.name, id.serial, id.details
                );
            }
            Ok(found)
        }
        Err(_) => Err(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use modbus_sim::{FaultKind, SimConfig, Simulator};

    /// Polls the port (waiting on the line as the main loop would) until `want` happens or
    /// `timeout` passes.
    fn poll_until(port: &mut Port, want: &Event, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let now = Instant::now();
            if port.poll(now, None, &mut JustWait) == *want {
                return true;
            }
            let wake = port
                .next_wake(Instant::now(), None)
                .map(|t| t.min(deadline));
            wait_for_line(port.fd(), wake);
        }
        false
    }

    fn port_on(sim: &modbus_sim::SimHandle, timing: Timing) -> Port {
        let mut port = Port::new(
            sim.tty_path(),
            SerialSettings::default(),
            &[1, 2],
            timing,
            Duration::from_millis(100),
            &|_| None,
        );
        port.ensure_open(Instant::now()).unwrap();
        port
    }

    #[test]
    fn a_silent_unit_is_probed_although_the_meter_always_has_a_read_due() {
        let sim = Simulator::start(SimConfig::default()).unwrap();
        sim.fault(1, FaultKind::Offline, true);
        let timing = Timing {
            lost_after: Duration::from_secs(5),
            probe_interval: Duration::from_millis(200),
        };
        let mut port = port_on(&sim, timing);
        assert!(poll_until(
            &mut port,
            &Event::Online(1),
            Duration::from_secs(5)
        ));
        assert!(!port.units[0].lifecycle.is_online());
        port.set_fast_pace(1, FastPace::AsAllowed);
        // The inverter wakes: a later probe finds it while the meter is read continuously.
        sim.clear_fault(1);
        assert!(poll_until(
            &mut port,
            &Event::Online(0),
            Duration::from_secs(5)
        ));
        assert!(port.units[1].lifecycle.is_online());
    }

    #[test]
    fn units_get_the_strictest_pace_until_identified_then_their_models() {
        let sim = Simulator::start(SimConfig::default()).unwrap();
        let mut port = Port::new(
            sim.tty_path(),
            SerialSettings::default(),
            &[1, 2],
            Timing::default(),
            Duration::from_millis(100),
            &|u| (u == 1).then_some(Duration::from_millis(850)),
        );
        let strictest = UnitPacing {
            silence: Duration::from_millis(60),
            interval: Duration::from_millis(400),
        };
        assert_eq!(
            port.pacing(0),
            Some(UnitPacing {
                interval: Duration::from_millis(850),
                ..strictest
            })
        );
        assert_eq!(port.pacing(1), Some(strictest));
        port.ensure_open(Instant::now()).unwrap();
        assert!(poll_until(
            &mut port,
            &Event::Online(0),
            Duration::from_secs(5)
        ));
        assert!(poll_until(
            &mut port,
            &Event::Online(1),
            Duration::from_secs(5)
        ));
        // The Growatt keeps the command line's interval; the meter has its own silence only.
        assert_eq!(
            port.pacing(0),
            Some(UnitPacing {
                silence: Duration::ZERO,
                interval: Duration::from_millis(850)
            })
        );
        assert_eq!(
            port.pacing(1),
            Some(UnitPacing {
                silence: Duration::from_millis(60),
                interval: Duration::ZERO
            })
        );
    }

    #[test]
    fn one_failed_read_is_retried_at_once_two_in_a_row_pause_the_unit() {
        assert_eq!(retry_pause(1), None);
        assert_eq!(retry_pause(2), Some(RETRY_AFTER_FAILURE));
        assert_eq!(retry_pause(u8::MAX), Some(RETRY_AFTER_FAILURE));
    }

    fn candidate(unit: usize, what: What, due: Instant, ready: Instant) -> Candidate {
        Candidate {
            unit,
            what,
            due,
            ready,
            takes: Duration::from_millis(50),
        }
    }

    #[test]
    fn the_most_urgent_ready_work_goes_first_and_a_write_keeps_its_slot() {
        let t = Instant::now() + Duration::from_secs(10);
        let ms = |n: u64| Duration::from_millis(n);
        let write = What::Write { addr: 3, value: 50 };
        // Earliest due first among what is ready.
        let meter = candidate(1, What::Read, t - ms(100), t);
        let inverter = candidate(0, What::Read, t - ms(300), t);
        assert_eq!(
            choose(t, false, &[meter, inverter]).map(|c| c.unit),
            Some(0)
        );
        // A unit not ready yet does not stop the others when it would be ready after them...
        let inverter_later = candidate(0, What::Read, t - ms(300), t + ms(200));
        assert_eq!(
            choose(t, false, &[meter, inverter_later]).map(|c| c.unit),
            Some(1)
        );
        // ...but a more urgent unit ready before the read would end keeps the bus free.
        let inverter_soon = candidate(0, What::Read, t - ms(300), t + ms(20));
        assert!(choose(t, false, &[meter, inverter_soon]).is_none());
        // A pending write is the most urgent of all.
        let pending = candidate(0, write, t - ms(10_000), t + ms(20));
        assert!(choose(t, false, &[meter, pending]).is_none());
        let pending_now = candidate(0, write, t - ms(10_000), t);
        assert_eq!(
            choose(t, false, &[meter, pending_now]).map(|c| c.what),
            Some(write)
        );
        // Nothing due: nothing.
        let later = candidate(1, What::Read, t + ms(5), t);
        assert!(choose(t, false, &[later]).is_none());
    }

    #[test]
    fn probes_go_by_due_time_but_never_right_after_a_failure_while_a_read_is_due() {
        let t = Instant::now() + Duration::from_secs(10);
        let ms = |n: u64| Duration::from_millis(n);
        let probe = candidate(0, What::Probe, t - ms(500), t);
        let read = candidate(1, What::Read, t - ms(100), t);
        assert_eq!(
            choose(t, false, &[probe, read]).map(|c| c.what),
            Some(What::Probe)
        );
        assert_eq!(
            choose(t, true, &[probe, read]).map(|c| c.what),
            Some(What::Read)
        );
        assert_eq!(choose(t, true, &[probe]).map(|c| c.what), Some(What::Probe));
    }
}
