//! The serial line under the master: a small transport trait, its production implementation
//! over serialport's `TTYPort`, and the line settings the RTU timing is derived from.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use serialport::TTYPort;

use super::ModbusError;

/// What the master needs from a serial line. Reads never block: the master decides how long to
/// wait (the silence before a request, the reply's deadlines), either itself through
/// [`Line::wait`] or in the caller's poll loop.
pub trait Line {
    /// Hands `frame` whole to the line. It may return before the last byte has left (no
    /// tcdrain: that would be one more sleep and wake-up per request); the master counts the
    /// frame's wire time itself.
    fn send(&mut self, frame: &[u8]) -> io::Result<()>;
    /// Reads what has arrived into `buf`, without waiting; `Ok(0)` when nothing is pending.
    /// A line that is gone is an error, never `Ok(0)`.
    fn read_ready(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Waits until input is pending or `until` has passed, whichever is first (at once when
    /// `until` has passed). The blocking conveniences use it; the main loop polls the fd.
    fn wait(&mut self, until: Instant) -> io::Result<()>;
    /// The clock every instant of the master is on (virtual in a scripted line).
    fn now(&self) -> Instant;
    /// Makes reads and writes non-blocking, as `read_ready` needs (done once, by the master).
    fn prepare(&mut self) -> io::Result<()> {
        Ok(())
    }
}

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

    /// The inter-frame silence: 3.5 characters, fixed at 1.75 ms above 19200 baud (Modbus over
    /// serial line v1.02 §2.5.1.1).
    pub fn frame_silence(&self) -> Duration {
        if self.baud > 19200 {
            Duration::from_micros(1750)
        } else {
            self.wire_time(7) / 2
        }
    }
}

/// serialport bounds each write's wait for the transmitter by the port's timeout (reads do not
/// use it: they never wait).
const WRITE_TIMEOUT: Duration = Duration::from_millis(100);

/// The line's fd in non-blocking mode: reads and writes never wait, so each costs one syscall
/// (no poll before it); the master and the main loop do the waiting.
pub(crate) fn set_nonblocking(port: &TTYPort) -> io::Result<()> {
    let fd = port.as_raw_fd();
    // SAFETY: F_GETFL/F_SETFL on a descriptor the port owns; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Line for TTYPort {
    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        let fd = self.as_raw_fd();
        let mut rest = frame;
        let deadline = Instant::now() + WRITE_TIMEOUT;
        while !rest.is_empty() {
            // SAFETY: `rest` is valid for reads of its length; the fd is owned by `self`.
            let n = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
            match usize::try_from(n) {
                Ok(n) => rest = rest.get(n..).unwrap_or(&[]),
                Err(_) => {
                    let e = io::Error::last_os_error();
                    match e.kind() {
                        io::ErrorKind::Interrupted => {}
                        // A full output buffer (never for a Modbus frame on an idle line).
                        io::ErrorKind::WouldBlock => {
                            let left = deadline.saturating_duration_since(Instant::now());
                            if left.is_zero() || !wait_writable(fd, left)? {
                                return Err(io::ErrorKind::TimedOut.into());
                            }
                        }
                        _ => return Err(e),
                    }
                }
            }
        }
        Ok(())
    }

    fn read_ready(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let fd = self.as_raw_fd();
        if buf.is_empty() {
            return Ok(0);
        }
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes; the fd is owned by `self`
        // and non-blocking (`set_nonblocking`).
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        match usize::try_from(n) {
            Ok(0) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "serial line hung up",
            )),
            Ok(n) => Ok(n),
            Err(_) => {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                    _ => Err(e),
                }
            }
        }
    }

    fn wait(&mut self, until: Instant) -> io::Result<()> {
        wait_readable(
            self.as_raw_fd(),
            until.saturating_duration_since(Instant::now()),
        )
        .map(|_| ())
    }

    fn now(&self) -> Instant {
        Instant::now()
    }

    fn prepare(&mut self) -> io::Result<()> {
        set_nonblocking(self)
    }
}

/// ppoll(2) for input on `fd` for at most `timeout` (nanosecond resolution: poll(2)'s whole
/// milliseconds would stretch a 3.6 ms silence to 4 ms). True when the fd is readable or hung
/// up (the read then tells which); false on timeout or a signal.
fn wait_readable(fd: RawFd, timeout: Duration) -> io::Result<bool> {
    wait_for(fd, libc::POLLIN, timeout)
}

fn wait_writable(fd: RawFd, timeout: Duration) -> io::Result<bool> {
    wait_for(fd, libc::POLLOUT, timeout)
}

fn wait_for(fd: RawFd, events: libc::c_short, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: a timespec is plain data; all-zero is a valid value.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    ts.tv_sec = libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX);
    // Below 10^9: fits a c_long of any width.
    ts.tv_nsec = timeout.subsec_nanos() as libc::c_long;
    // SAFETY: one valid pollfd, a valid timespec, no signal mask change.
    let ready = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
    if ready < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::Interrupted => Ok(false),
            _ => Err(e),
        };
    }
    if pfd.revents & libc::POLLNVAL != 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    Ok(ready > 0)
}

pub(crate) fn open_port(path: &str, settings: SerialSettings) -> Result<TTYPort, ModbusError> {
    let parity = match settings.parity {
        Parity::None => serialport::Parity::None,
        Parity::Even => serialport::Parity::Even,
    };
    let opened = serialport::new(path, settings.baud)
        .data_bits(serialport::DataBits::Eight)
        .stop_bits(serialport::StopBits::One)
        .parity(parity)
        .flow_control(serialport::FlowControl::None)
        .timeout(WRITE_TIMEOUT)
        .open_native();
    let port = match opened {
        Ok(port) => port,
        // ENOSYS; serialport reports it as an unknown error with the errno's text.
        Err(e) if e.description.contains("not implemented") => open_without_line_settings(path)?,
        Err(e) => return Err(e.into()),
    };
    Ok(port)
}

/// serialport sets the line through termios2 (TCGETS2), which qemu-user 7.2 does not emulate
/// (ENOSYS): the armv7 smoke test runs the daemon under it (NOTEBOOK.md, 2026-11-25). Real
/// kernels never take this path. The line is used as it is, which is right for the simulator's
/// pty (already raw).
fn open_without_line_settings(path: &str) -> Result<TTYPort, ModbusError> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(path)?;
    log::warn!(
        "{path}: line settings not supported by the kernel (qemu-user?); using the line as it is"
    );
    // SAFETY: the fd was just opened and is owned by nothing else.
    let mut port = unsafe { TTYPort::from_raw_fd(file.into_raw_fd()) };
    serialport::SerialPort::set_timeout(&mut port, WRITE_TIMEOUT)?;
    Ok(port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

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
        let at_19200 = SerialSettings {
            baud: 19200,
            parity: Parity::None,
        };
        assert_eq!(at_19200.frame_silence().as_micros(), 1822);
        let fast = SerialSettings {
            baud: 115200,
            parity: Parity::None,
        };
        assert_eq!(fast.frame_silence(), Duration::from_micros(1750));
    }

    #[test]
    fn the_tty_line_reads_what_is_there_without_waiting_and_waits_for_input() {
        let (mut device, mut master) = TTYPort::pair().unwrap();
        set_nonblocking(&master).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(master.read_ready(&mut buf).unwrap(), 0);
        // Nothing pending: the wait lasts until the deadline.
        let t = Instant::now();
        master.wait(t + Duration::from_millis(20)).unwrap();
        assert!(t.elapsed() >= Duration::from_millis(20));
        device.write_all(&[1, 2, 3]).unwrap();
        // Input pending: the wait returns early (a bound, not a benchmark).
        let t = Instant::now();
        master.wait(t + Duration::from_secs(10)).unwrap();
        assert!(t.elapsed() < Duration::from_secs(5));
        let mut got = Vec::new();
        while got.len() < 3 {
            let n = master.read_ready(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
            master
                .wait(Instant::now() + Duration::from_millis(100))
                .unwrap();
        }
        assert_eq!(got, [1, 2, 3]);
        master.send(&[9, 8]).unwrap();
        let mut echo = [0u8; 2];
        std::io::Read::read_exact(&mut device, &mut echo).unwrap();
        assert_eq!(echo, [9, 8]);
        // The other end gone: an error, not an endless stream of empty reads.
        drop(device);
        master
            .wait(Instant::now() + Duration::from_secs(1))
            .unwrap();
        assert!(master.read_ready(&mut buf).is_err());
    }
}
