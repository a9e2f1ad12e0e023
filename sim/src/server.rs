//! The simulator's server: one thread owns the pty master and answers requests like the devices
//! on an RS485 bus would, with optional realistic timing, the plant model and fault injection.

use std::collections::VecDeque;
use std::fmt;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serialport::{SerialPort, TTYPort};

use crate::bank::{
    EXCEPTION_ILLEGAL_ADDRESS, EXCEPTION_ILLEGAL_FUNCTION, EXCEPTION_ILLEGAL_VALUE, RegisterKind,
};
use crate::device::{Device, step_plant};
use crate::frame::{
    FN_READ_HOLDING, FN_READ_INPUT, FN_WRITE_MULTIPLE, FN_WRITE_SINGLE, crc_ok, crc16, request_len,
    with_crc,
};
use crate::growatt::GrowattProfile;
use crate::plant::Plant;
use crate::rng::Rng;
use crate::sdm230::MeterProfile;
use crate::timing::LineSettings;

/// How many holding-register writes the log keeps.
pub const WRITE_LOG_LEN: usize = 1024;
/// How many requests the request log keeps (about half an hour of a busy 9600-baud bus).
pub const REQUEST_LOG_LEN: usize = 16_384;
/// Eastron: "a silent interval of 60 msec minimum is required in order to guarantee successful
/// reception of the next request" (the daemon's docs/reference/eastron-sdm230.md §1).
pub const METER_SILENCE: Duration = Duration::from_millis(60);
/// A partial request older than this is dropped (a gap that long ends any frame).
const REQUEST_GAP: Duration = Duration::from_millis(50);
/// A late reply nobody provoked by a new request goes out after this anyway.
const LATE_REPLY_MAX_HOLD: Duration = Duration::from_secs(1);
const POLL: Duration = Duration::from_millis(10);

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub meter_unit: Option<u8>,
    pub growatt_unit: Option<u8>,
    /// Which meter answers at `meter_unit` (default: an SDM230).
    pub meter: MeterProfile,
    /// Which Growatt answers at `growatt_unit` (default: the users' MIN 4200TL-XE).
    pub growatt: GrowattProfile,
    /// Line settings the realistic timing is computed for.
    pub serial: LineSettings,
    /// Reply after the request's and the reply's wire time plus `turnaround`.
    pub realistic: bool,
    pub turnaround: Duration,
    /// Couple load, PV, inverter and meter (see [`Plant`]).
    pub plant: Option<Plant>,
    /// Print every holding write on stdout (the process form).
    pub print_writes: bool,
    /// Whether the SDM230 ignores a request that comes less than [`METER_SILENCE`] after its
    /// last reply, as Eastron documents.
    pub meter_silence: MeterSilence,
}

/// When the simulated SDM230 enforces its 60 ms silence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MeterSilence {
    /// With realistic timing only: the quirk is about time on the wire, and the instant mode
    /// (protocol tests, no wire time modelled) would only see it as a timing artefact of its own.
    #[default]
    WhenRealistic,
    Always,
    Never,
}

impl MeterSilence {
    fn applies(self, realistic: bool) -> bool {
        match self {
            MeterSilence::WhenRealistic => realistic,
            MeterSilence::Always => true,
            MeterSilence::Never => false,
        }
    }
}

/// One request as the simulator received it: when its first byte arrived, what it asked, and
/// what became of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestRecord {
    pub at: Instant,
    pub unit: u8,
    pub function: u8,
    pub addr: u16,
    /// Registers (reads, multiple writes) or the value (single writes).
    pub count: u16,
    /// Ignored by the SDM230: it came inside the meter's silence after its last reply.
    pub ignored: bool,
    /// When the unit's reply went out (None: no reply, e.g. silent, ignored or a broadcast).
    pub replied_at: Option<Instant>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            meter_unit: Some(2),
            growatt_unit: Some(1),
            meter: MeterProfile::default(),
            growatt: GrowattProfile::default(),
            serial: LineSettings::default(),
            realistic: false,
            turnaround: Duration::from_millis(20),
            plant: None,
            print_writes: false,
            meter_silence: MeterSilence::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Silent, as a sleeping inverter.
    Offline,
    /// Extra delay before the reply.
    Slow(Duration),
    /// One data byte flipped, CRC left as it was.
    Crc,
    /// Noise of the reply's length instead of the reply.
    Garbage,
    /// Only the first half of the reply.
    Truncated,
    /// A Modbus exception with this code.
    Exception(u8),
    /// The reply comes with another unit id (and a valid CRC).
    WrongUnit,
    /// The reply is held back and sent just after the next request arrives, i.e. while the
    /// master already waits for the reply to that one.
    Late,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub kind: FaultKind,
    /// One-shot faults hit the next request to the unit only.
    pub persistent: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteRecord {
    pub at: SystemTime,
    pub unit: u8,
    pub addr: u16,
    pub value: u16,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SimError {
    NoSuchUnit(u8),
    NoSuchValue(String),
    /// The register is outside the device's map.
    NoSuchRegister(u16),
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimError::NoSuchUnit(u) => write!(f, "no simulated device at unit {u}"),
            SimError::NoSuchValue(n) => write!(f, "unknown value name {n:?}"),
            SimError::NoSuchRegister(a) => write!(f, "register {a} is not in the map"),
        }
    }
}

impl std::error::Error for SimError {}

struct SimState {
    meter: Option<(u8, Device)>,
    growatt: Option<(u8, Device)>,
    plant: Option<Plant>,
    faults: Vec<(u8, Fault)>,
    writes: VecDeque<WriteRecord>,
    requests: VecDeque<RequestRecord>,
    /// The SDM230 ignores requests inside its silence.
    meter_silence: bool,
    last_tick: Instant,
}

impl SimState {
    fn device(&mut self, unit: u8) -> Option<&mut Device> {
        match (&mut self.meter, &mut self.growatt) {
            (Some((u, d)), _) if *u == unit => Some(d),
            (_, Some((u, d))) if *u == unit => Some(d),
            _ => None,
        }
    }

    fn tick(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last_tick);
        self.last_tick = now;
        if let (Some(plant), Some((_, meter)), Some((_, inverter))) =
            (self.plant, &mut self.meter, &mut self.growatt)
        {
            step_plant(&plant, dt, meter, inverter);
        }
        for (_, d) in self.meter.iter_mut().chain(self.growatt.iter_mut()) {
            d.integrate(dt);
        }
    }

    fn take_fault(&mut self, unit: u8) -> Option<FaultKind> {
        let i = self.faults.iter().position(|(u, _)| *u == unit)?;
        let (_, fault) = *self.faults.get(i)?;
        if !fault.persistent {
            self.faults.remove(i);
        }
        Some(fault.kind)
    }

    fn log_write(&mut self, unit: u8, addr: u16, values: &[u16], print: bool) {
        let at = SystemTime::now();
        for (i, &value) in values.iter().enumerate() {
            let addr = addr.wrapping_add(i as u16);
            if self.writes.len() == WRITE_LOG_LEN {
                self.writes.pop_front();
            }
            self.writes.push_back(WriteRecord {
                at,
                unit,
                addr,
                value,
            });
            if print {
                let t = at
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64();
                println!("write {t:.3} unit {unit} hr {addr} = {value}");
            }
        }
    }
}

struct Shared {
    state: Mutex<SimState>,
    stop: AtomicBool,
    requests: AtomicU64,
    replies: AtomicU64,
    /// Shortest idle time seen between a reply and the next request, in µs.
    min_idle_us: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, SimState> {
        // A panic elsewhere must not take the simulator down with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct Simulator;

impl Simulator {
    /// Creates the pty pair and starts serving on its own thread.
    pub fn start(config: SimConfig) -> std::io::Result<SimHandle> {
        let (master, slave) = TTYPort::pair()?;
        // pair() leaves both fds inheritable: a daemon the test spawns later would hold the
        // master open, so closing the simulator would never hang up its port.
        set_cloexec(&master)?;
        set_cloexec(&slave)?;
        // The slave stays open here so the master side never sees EIO when the client
        // closes and reopens. pair() neither sets TIOCEXCL nor takes a flock on it (and
        // set_exclusive(false) would take a shared flock), so the client's exclusive open works.
        let tty_path = slave
            .name()
            .ok_or_else(|| std::io::Error::other("pty slave has no name"))?;
        let shared = Arc::new(Shared {
            state: Mutex::new(SimState {
                meter: config
                    .meter_unit
                    .map(|u| (u, Device::meter(u, &config.meter))),
                growatt: config
                    .growatt_unit
                    .map(|u| (u, Device::growatt_as(u, &config.growatt))),
                plant: config.plant,
                faults: Vec::new(),
                writes: VecDeque::with_capacity(WRITE_LOG_LEN),
                requests: VecDeque::with_capacity(REQUEST_LOG_LEN),
                meter_silence: config.meter_silence.applies(config.realistic),
                last_tick: Instant::now(),
            }),
            stop: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            replies: AtomicU64::new(0),
            min_idle_us: AtomicU64::new(u64::MAX),
        });
        let server = Server {
            port: master,
            _slave: slave,
            shared: Arc::clone(&shared),
            config,
            late: None,
            last_reply_at: None,
            meter_replied_at: None,
            rng: Rng(0x2545_F491_4F6C_DD1D),
        };
        let thread = std::thread::Builder::new()
            .name("modbus-sim".into())
            .spawn(move || server.run())?;
        Ok(SimHandle {
            shared,
            thread: Some(thread),
            tty_path,
        })
    }
}

/// Controls a running simulator; dropping it stops the simulator.
pub struct SimHandle {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    tty_path: String,
}

impl SimHandle {
    /// The pty slave a client opens.
    pub fn tty_path(&self) -> &str {
        &self.tty_path
    }

    /// Sets a named value of the device at `unit` (see [`SimHandle::names`]).
    pub fn set(&self, unit: u8, name: &str, value: f64) -> Result<(), SimError> {
        let mut s = self.shared.lock();
        let d = s.device(unit).ok_or(SimError::NoSuchUnit(unit))?;
        if d.set(name, value) {
            Ok(())
        } else {
            Err(SimError::NoSuchValue(name.to_string()))
        }
    }

    pub fn get(&self, unit: u8, name: &str) -> Result<f64, SimError> {
        let mut s = self.shared.lock();
        let d = s.device(unit).ok_or(SimError::NoSuchUnit(unit))?;
        d.get(name)
            .ok_or_else(|| SimError::NoSuchValue(name.to_string()))
    }

    pub fn names(&self, unit: u8) -> Result<&'static [&'static str], SimError> {
        let mut s = self.shared.lock();
        Ok(s.device(unit).ok_or(SimError::NoSuchUnit(unit))?.names())
    }

    /// Sets any register; raw input values stick until the next `set_raw` of that address.
    pub fn set_raw(
        &self,
        unit: u8,
        kind: RegisterKind,
        addr: u16,
        value: u16,
    ) -> Result<(), SimError> {
        let mut s = self.shared.lock();
        let d = s.device(unit).ok_or(SimError::NoSuchUnit(unit))?;
        d.set_raw(kind, addr, value)
            .map_err(|_| SimError::NoSuchRegister(addr))
    }

    pub fn register(&self, unit: u8, kind: RegisterKind, addr: u16) -> Result<u16, SimError> {
        let mut s = self.shared.lock();
        let d = s.device(unit).ok_or(SimError::NoSuchUnit(unit))?;
        d.raw(kind, addr).ok_or(SimError::NoSuchRegister(addr))
    }

    /// Another Growatt model at the inverter's unit, fresh from the factory (the old one's
    /// values, faults and write log stay). False when the simulator has no inverter.
    pub fn replace_growatt(&self, profile: &GrowattProfile) -> bool {
        let mut s = self.shared.lock();
        match &mut s.growatt {
            Some((unit, device)) => {
                *device = Device::growatt_as(*unit, profile);
                true
            }
            None => false,
        }
    }

    /// Another meter at the meter's unit. False when the simulator has no meter.
    pub fn replace_meter(&self, profile: &MeterProfile) -> bool {
        let mut s = self.shared.lock();
        match &mut s.meter {
            Some((unit, device)) => {
                *device = Device::meter(*unit, profile);
                true
            }
            None => false,
        }
    }

    /// A night for the PV-powered unit at `unit`: its registers as at the next power-up (with
    /// HR2 = 0, HR3 back to 255). Combine with [`FaultKind::Offline`] for the dark hours.
    pub fn power_up(&self, unit: u8) -> Result<(), SimError> {
        let mut s = self.shared.lock();
        let d = s.device(unit).ok_or(SimError::NoSuchUnit(unit))?;
        if d.power_up() {
            Ok(())
        } else {
            Err(SimError::NoSuchValue(
                "power-up of a mains-powered device".into(),
            ))
        }
    }

    /// Writes of HR3, 4, 5 or 99 the unit at `unit` took while its HR2 read 1: each went to
    /// its non-volatile memory.
    pub fn nonvolatile_writes(&self, unit: u8) -> Result<u64, SimError> {
        let mut s = self.shared.lock();
        Ok(s.device(unit)
            .ok_or(SimError::NoSuchUnit(unit))?
            .nonvolatile_writes())
    }

    /// Locks HR2 of the Growatt at `unit` against writes (acknowledged, not applied), or unlocks.
    pub fn lock_memory_state(&self, unit: u8, locked: bool) -> Result<(), SimError> {
        let mut s = self.shared.lock();
        let d = s.device(unit).ok_or(SimError::NoSuchUnit(unit))?;
        if d.lock_memory_state(locked) {
            Ok(())
        } else {
            Err(SimError::NoSuchValue("HR2 of a meter".into()))
        }
    }

    /// Turns the plant model on (with these parameters) or off.
    pub fn set_plant(&self, plant: Option<Plant>) {
        self.shared.lock().plant = plant;
    }

    pub fn plant(&self) -> Option<Plant> {
        self.shared.lock().plant
    }

    /// Replaces the fault of `unit`.
    pub fn fault(&self, unit: u8, kind: FaultKind, persistent: bool) {
        let mut s = self.shared.lock();
        s.faults.retain(|(u, _)| *u != unit);
        s.faults.push((unit, Fault { kind, persistent }));
    }

    pub fn clear_fault(&self, unit: u8) {
        self.shared.lock().faults.retain(|(u, _)| *u != unit);
    }

    /// Every request received (CRC-valid, any unit), oldest first (the last
    /// [`REQUEST_LOG_LEN`]), with the simulator's own timestamps.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.lock().requests.iter().copied().collect()
    }

    /// The requests to `unit` received at or after `since`.
    pub fn requests_to(&self, unit: u8, since: Instant) -> Vec<RequestRecord> {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.unit == unit && r.at >= since)
            .copied()
            .collect()
    }

    /// Turns the SDM230's 60 ms silence rule on or off.
    pub fn set_meter_silence(&self, on: bool) {
        self.shared.lock().meter_silence = on;
    }

    /// Holding-register writes received, oldest first (the last [`WRITE_LOG_LEN`]).
    pub fn writes(&self) -> Vec<WriteRecord> {
        self.shared.lock().writes.iter().copied().collect()
    }

    /// Complete, CRC-valid requests seen on the bus (any unit).
    pub fn requests_seen(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// Replies (of any kind, faulty ones included) written to the line.
    pub fn replies_sent(&self) -> u64 {
        self.shared.replies.load(Ordering::Relaxed)
    }

    /// The shortest silence seen on the line between the end of a reply and the start of the
    /// next request (the master's inter-frame gap); None before two such frames.
    pub fn min_idle_before_request(&self) -> Option<Duration> {
        match self.shared.min_idle_us.load(Ordering::Relaxed) {
            u64::MAX => None,
            us => Some(Duration::from_micros(us)),
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Server {
    port: TTYPort,
    _slave: TTYPort,
    shared: Arc<Shared>,
    config: SimConfig,
    /// A reply held back by the Late fault, and its unit.
    late: Option<(Instant, u8, Vec<u8>)>,
    last_reply_at: Option<Instant>,
    /// When the SDM230 last replied (its silence counts from there).
    meter_replied_at: Option<Instant>,
    /// Noise for the Garbage fault.
    rng: Rng,
}

impl Server {
    fn run(mut self) {
        let mut buf = [0u8; 512];
        let mut len = 0usize;
        let mut last_byte = Instant::now();
        let mut frame_start = Instant::now();
        while !self.shared.stop.load(Ordering::Relaxed) {
            let _ = self.port.set_timeout(POLL);
            let free = buf.get_mut(len..).unwrap_or(&mut []);
            if free.is_empty() {
                len = 0;
                continue;
            }
            match self.port.read(free) {
                Ok(n) if n > 0 => {
                    if len == 0 {
                        frame_start = Instant::now();
                    }
                    len += n;
                    last_byte = Instant::now();
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => std::thread::sleep(POLL),
            }
            self.shared.lock().tick(Instant::now());
            while let Some(frame_len) = request_len(buf.get(..len).unwrap_or(&[])) {
                if frame_len > len {
                    break;
                }
                let frame = buf.get(..frame_len).unwrap_or(&[]).to_vec();
                self.record_idle(frame_start);
                self.handle(&frame, frame_start, last_byte);
                buf.copy_within(frame_len..len, 0);
                len -= frame_len;
            }
            if len > 0 && last_byte.elapsed() > REQUEST_GAP {
                len = 0;
            }
            if let Some((since, _, _)) = &self.late
                && since.elapsed() > LATE_REPLY_MAX_HOLD
            {
                self.send_late();
            }
        }
    }

    fn send_late(&mut self) {
        if let Some((_, unit, reply)) = self.late.take() {
            self.send(&reply, unit);
            // Keep an inter-frame gap before whatever follows.
            std::thread::sleep(self.config.serial.frame_silence() + Duration::from_millis(2));
        }
    }

    fn handle(&mut self, frame: &[u8], started: Instant, received: Instant) {
        if !crc_ok(frame) {
            return; // A device ignores a corrupt request.
        }
        self.shared.requests.fetch_add(1, Ordering::Relaxed);
        self.send_late();
        let (Some(&unit), Some(&function)) = (frame.first(), frame.get(1)) else {
            return;
        };
        let word = |i: usize| match (frame.get(i), frame.get(i + 1)) {
            (Some(&hi), Some(&lo)) => u16::from_be_bytes([hi, lo]),
            _ => 0,
        };
        let print = self.config.print_writes;
        let (reply, fault) = {
            let mut s = self.shared.lock();
            let is_meter = s.meter.as_ref().is_some_and(|(u, _)| *u == unit);
            let ignored = is_meter
                && s.meter_silence
                && self
                    .meter_replied_at
                    .is_some_and(|t| started.saturating_duration_since(t) < METER_SILENCE);
            if s.requests.len() == REQUEST_LOG_LEN {
                s.requests.pop_front();
            }
            s.requests.push_back(RequestRecord {
                at: started,
                unit,
                function,
                addr: word(2),
                count: word(4),
                ignored,
                replied_at: None,
            });
            if ignored {
                return;
            }
            if unit == 0 {
                // Broadcast: writes apply to every device, nobody answers.
                let units: Vec<u8> = s
                    .meter
                    .iter()
                    .chain(s.growatt.iter())
                    .map(|(u, _)| *u)
                    .collect();
                for u in units {
                    let _ = execute(&mut s, u, frame, print);
                }
                return;
            }
            if s.device(unit).is_none() {
                return;
            }
            let fault = s.take_fault(unit);
            if fault == Some(FaultKind::Offline) {
                return;
            }
            let pdu = execute(&mut s, unit, frame, print);
            (pdu, fault)
        };
        let mut reply = match (fault, reply) {
            (Some(FaultKind::Exception(code)), _) | (_, Err(code)) => {
                with_crc(&[unit, function | 0x80, code])
            }
            (_, Ok(pdu)) => pdu,
        };
        let mut extra = Duration::ZERO;
        match fault {
            Some(FaultKind::Slow(d)) => extra = d,
            Some(FaultKind::Crc) => {
                if let Some(b) = reply.get_mut(3) {
                    *b ^= 0x5A;
                }
            }
            Some(FaultKind::Garbage) => {
                for b in reply.iter_mut() {
                    *b = self.rng.byte();
                }
                // Noise never looks like a known function code.
                if let Some(b) = reply.get_mut(1) {
                    *b = 0x7F;
                }
            }
            Some(FaultKind::Truncated) => {
                let half = reply.len() / 2;
                reply.truncate(half.max(1));
            }
            Some(FaultKind::WrongUnit) => {
                let other = if unit >= 247 { 1 } else { unit + 1 };
                if let Some(b) = reply.first_mut() {
                    *b = other;
                }
                let body_len = reply.len().saturating_sub(2);
                reply.truncate(body_len);
                let crc = crc16(&reply);
                reply.extend_from_slice(&crc.to_le_bytes());
            }
            _ => {}
        }
        let mut delay = extra;
        if self.config.realistic {
            let wire = self.config.serial.wire_time(frame.len() + reply.len());
            delay += wire + self.config.turnaround;
        }
        if !self.sleep_until(received + delay) {
            return;
        }
        if fault == Some(FaultKind::Late) {
            self.late = Some((Instant::now(), unit, reply));
            return;
        }
        self.send(&reply, unit);
    }

    /// Sends `reply`, the answer of `unit` (whatever a fault made of its bytes).
    fn send(&mut self, reply: &[u8], unit: u8) {
        // Stamped before the write: no byte of the reply can be on the line earlier, so a
        // silence measured from here is never longer than the real one (a thread preempted
        // after its write must not make a punctual master look early).
        let now = Instant::now();
        let _ = self.port.write_all(reply);
        self.last_reply_at = Some(now);
        self.shared.replies.fetch_add(1, Ordering::Relaxed);
        // The reply of the last request of its unit (a late reply is booked on the newest).
        let mut s = self.shared.lock();
        if s.meter.as_ref().is_some_and(|(u, _)| *u == unit) {
            self.meter_replied_at = Some(now);
        }
        if let Some(r) = s.requests.iter_mut().rev().find(|r| r.unit == unit) {
            r.replied_at.get_or_insert(now);
        }
    }

    fn record_idle(&self, request_start: Instant) {
        if let Some(reply) = self.last_reply_at
            && reply < request_start
        {
            let idle = u64::try_from((request_start - reply).as_micros()).unwrap_or(u64::MAX);
            self.shared.min_idle_us.fetch_min(idle, Ordering::Relaxed);
        }
    }

    /// Sleeps in short steps so a stop request is honoured; false when stopping.
    fn sleep_until(&self, when: Instant) -> bool {
        loop {
            if self.shared.stop.load(Ordering::Relaxed) {
                return false;
            }
            let left = when.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(POLL));
        }
    }
}

fn set_cloexec(port: &TTYPort) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: F_SETFD on a descriptor this TTYPort owns; no memory is passed.
    match unsafe { libc::fcntl(port.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } {
        -1 => Err(std::io::Error::last_os_error()),
        _ => Ok(()),
    }
}

/// Executes a CRC-valid request on the device at `unit`: the reply frame, or an exception code.
fn execute(s: &mut SimState, unit: u8, frame: &[u8], print: bool) -> Result<Vec<u8>, u8> {
    let word = |i: usize| -> Option<u16> {
        Some(u16::from_be_bytes([*frame.get(i)?, *frame.get(i + 1)?]))
    };
    let function = *frame.get(1).ok_or(EXCEPTION_ILLEGAL_FUNCTION)?;
    let addr = word(2).ok_or(EXCEPTION_ILLEGAL_VALUE)?;
    let device = s.device(unit).ok_or(EXCEPTION_ILLEGAL_ADDRESS)?;
    match function {
        FN_READ_HOLDING | FN_READ_INPUT => {
            let count = word(4).ok_or(EXCEPTION_ILLEGAL_VALUE)?;
            if count == 0 || count > 125 {
                return Err(EXCEPTION_ILLEGAL_VALUE);
            }
            let kind = if function == FN_READ_HOLDING {
                RegisterKind::Holding
            } else {
                RegisterKind::Input
            };
            let regs = device.read(kind, addr, count)?;
            let mut body = vec![unit, function, (count * 2) as u8];
            for r in regs {
                body.extend_from_slice(&r.to_be_bytes());
            }
            Ok(with_crc(&body))
        }
        FN_WRITE_SINGLE => {
            let value = word(4).ok_or(EXCEPTION_ILLEGAL_VALUE)?;
            device.write_holding(addr, &[value])?;
            s.log_write(unit, addr, &[value], print);
            Ok(with_crc(frame.get(..6).unwrap_or(&[])))
        }
        FN_WRITE_MULTIPLE => {
            let count = word(4).ok_or(EXCEPTION_ILLEGAL_VALUE)?;
            let byte_count = usize::from(*frame.get(6).ok_or(EXCEPTION_ILLEGAL_VALUE)?);
            if count == 0 || count > 123 || byte_count != 2 * usize::from(count) {
                return Err(EXCEPTION_ILLEGAL_VALUE);
            }
            let data = frame
                .get(7..7 + byte_count)
                .ok_or(EXCEPTION_ILLEGAL_VALUE)?;
            let values: Vec<u16> = data
                .chunks_exact(2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                .collect();
            device.write_holding(addr, &values)?;
            s.log_write(unit, addr, &values, print);
            Ok(with_crc(frame.get(..6).unwrap_or(&[])))
        }
        _ => Err(EXCEPTION_ILLEGAL_FUNCTION),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{FN_READ_INPUT, with_crc};

    /// One request to the simulator's pty and whatever comes back within `wait`.
    fn exchange(port: &mut TTYPort, request: &[u8], wait: Duration) -> Vec<u8> {
        port.write_all(request).unwrap();
        let mut got = Vec::new();
        let deadline = Instant::now() + wait;
        let mut buf = [0u8; 64];
        while Instant::now() < deadline {
            let _ = port.set_timeout(Duration::from_millis(5));
            if let Ok(n) = port.read(&mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
        }
        got
    }

    #[test]
    fn the_meter_ignores_a_request_inside_its_silence_and_the_log_shows_it() {
        let sim = Simulator::start(SimConfig {
            realistic: true,
            turnaround: Duration::from_millis(5),
            ..SimConfig::default()
        })
        .unwrap();
        let mut port = serialport::new(sim.tty_path(), 9600).open_native().unwrap();
        let power = with_crc(&[2, FN_READ_INPUT, 0, 0x0C, 0, 2]);
        let t0 = Instant::now();
        // Answered; then at once again (inside 60 ms of that reply): ignored.
        assert_eq!(
            exchange(&mut port, &power, Duration::from_millis(60)).len(),
            9
        );
        assert!(exchange(&mut port, &power, Duration::from_millis(100)).is_empty());
        // After the silence it answers again, and the log has all three with their fate.
        assert_eq!(
            exchange(&mut port, &power, Duration::from_millis(80)).len(),
            9
        );
        let log = sim.requests_to(2, t0);
        assert_eq!(log.len(), 3, "{log:#?}");
        assert!(!log[0].ignored && log[0].replied_at.is_some());
        assert!(log[1].ignored && log[1].replied_at.is_none());
        assert!(!log[2].ignored && log[2].replied_at.is_some());
        assert!(log[1].at - log[0].replied_at.unwrap() < METER_SILENCE);
        assert_eq!((log[0].function, log[0].addr, log[0].count), (4, 0x0C, 2));
        // Off: the same quick request is answered.
        sim.set_meter_silence(false);
        assert_eq!(
            exchange(&mut port, &power, Duration::from_millis(60)).len(),
            9
        );
        assert_eq!(
            exchange(&mut port, &power, Duration::from_millis(60)).len(),
            9
        );
    }

    #[test]
    fn the_silence_rule_follows_realistic_timing_unless_told() {
        assert!(MeterSilence::WhenRealistic.applies(true));
        assert!(!MeterSilence::WhenRealistic.applies(false));
        assert!(MeterSilence::Always.applies(false));
        assert!(!MeterSilence::Never.applies(true));
    }
}
