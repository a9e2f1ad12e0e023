//! Connections: bus selection, blocking calls to peers, replies, and the pump shared by every
//! connection type.

use super::Error;
use dbus::Message;
use dbus::arg::IterAppend;
use dbus::channel::{BusType, Channel};
use dbus::strings::ErrorName;
use std::ffi::CString;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// Which bus to connect to (`--dbus system|session|ADDRESS`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BusAddress {
    System,
    Session,
    Address(String),
}

impl BusAddress {
    /// From the `--dbus` argument; without one, the session bus when `DBUS_SESSION_BUS_ADDRESS` is
    /// set (as velib and localsettings do), else the system bus.
    pub fn from_arg(arg: Option<&str>) -> BusAddress {
        match arg {
            Some("system") => BusAddress::System,
            Some("session") => BusAddress::Session,
            Some(a) => BusAddress::Address(a.to_string()),
            None if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some() => BusAddress::Session,
            None => BusAddress::System,
        }
    }
}

/// Timeout of the few blocking calls (RequestName, AddSettings, SetValue on settings). Peers on
/// Venus answer in milliseconds; this only bounds how long a hung peer can stall the loop.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) const DBUS_NAME: &str = "org.freedesktop.DBus";
pub(crate) const DBUS_PATH: &str = "/org/freedesktop/DBus";
pub(crate) const BUSITEM: &str = "com.victronenergy.BusItem";

/// A new private connection: one per service, so each has its own `/` and its own sender name.
/// Its socket is tracked for the main loop's poll ([`Pump::watch`]).
pub(crate) fn open(bus: &BusAddress) -> Result<Channel, Error> {
    let ch = match bus {
        BusAddress::System => Channel::get_private(BusType::System),
        BusAddress::Session => Channel::get_private(BusType::Session),
        BusAddress::Address(a) => {
            Channel::open_private(a).and_then(|mut c| c.register().map(|()| c))
        }
    };
    let mut ch = ch.map_err(|e| Error::Connect(describe(&e)))?;
    ch.set_watch_enabled(true);
    Ok(ch)
}

pub(crate) fn describe(e: &dbus::Error) -> String {
    format!("{}: {}", e.name().unwrap_or("?"), e.message().unwrap_or(""))
}

/// A method call, blocking until the reply. Messages arriving meanwhile stay queued for the pump.
pub(crate) fn call(
    ch: &Channel,
    dest: &str,
    path: &str,
    iface: &str,
    method: &str,
    args: impl FnOnce(&mut IterAppend),
) -> Result<Message, Error> {
    let mut msg = Message::new_method_call(dest, path, iface, method).map_err(Error::Invalid)?;
    args(&mut IterAppend::new(&mut msg));
    ch.send_with_reply_and_block(msg, CALL_TIMEOUT)
        .map_err(|e| Error::Call {
            method: format!("{dest} {path} {method}"),
            detail: describe(&e),
        })
}

pub(crate) fn add_match(ch: &Channel, rule: &str) -> Result<(), Error> {
    call(ch, DBUS_NAME, DBUS_PATH, DBUS_NAME, "AddMatch", |a| {
        a.append(rule)
    })
    .map(|_| ())
}

/// Sends a message; a full outgoing queue only means the peer is slow, the next pump flushes it.
pub(crate) fn send(ch: &Channel, msg: Message) {
    if ch.send(msg).is_err() {
        log::warn!("D-Bus: could not queue an outgoing message (out of memory?)");
    }
}

/// An error reply to a method call (unless the caller asked for no reply).
pub(crate) fn reply_error(ch: &Channel, call: &Message, name: &'static str, text: &str) {
    if call.get_no_reply() {
        return;
    }
    let Ok(name) = ErrorName::new(name) else {
        return;
    };
    let text = CString::new(text).unwrap_or_default();
    send(ch, call.error(&name, &text));
}

/// A method return with `fill` appending its arguments.
pub(crate) fn reply(ch: &Channel, call: &Message, fill: impl FnOnce(&mut IterAppend)) {
    if call.get_no_reply() {
        return;
    }
    if let Some(mut r) = Message::new_method_return(call) {
        fill(&mut IterAppend::new(&mut r));
        send(ch, r);
    }
}

pub(crate) const UNKNOWN_OBJECT: &str = "org.freedesktop.DBus.Error.UnknownObject";
pub(crate) const UNKNOWN_METHOD: &str = "org.freedesktop.DBus.Error.UnknownMethod";

/// Answers the calls every object must answer whatever it exports (Peer.Ping), else `false`.
pub(crate) fn handle_common(ch: &Channel, msg: &Message) -> bool {
    if msg.interface().as_deref() == Some("org.freedesktop.DBus.Peer") {
        match msg.member().as_deref() {
            Some("Ping") => reply(ch, msg, |_| {}),
            _ => reply_error(ch, msg, UNKNOWN_METHOD, "not supported"),
        }
        return true;
    }
    false
}

/// Something the main loop pumps: a service, the settings client, a watcher.
pub trait Pump {
    /// Reads what the connection has without blocking and handles every queued message.
    /// Returns how many messages were handled.
    fn pump_once(&mut self) -> Result<usize, Error>;
    /// Handles the messages already read from the socket (a blocking call reads and queues what
    /// arrives before its reply), without touching the socket.
    fn dispatch_queued(&mut self) -> Result<usize, Error>;
    /// Blocks until the connection has input or `timeout` passed.
    fn wait(&mut self, timeout: Duration) -> Result<(), Error>;
    /// The connection's socket, for the caller's poll.
    fn watch(&self) -> Watch;
}

/// What owns a connection: its channel and what it does with each message. Every such owner
/// is pumped the same way (the blanket [`Pump`] impl below).
pub(crate) trait Connection {
    fn channel(&self) -> &Channel;
    fn handle(&mut self, msg: &Message);
    /// Housekeeping after each read of the socket (e.g. dropping calls that were never answered).
    fn after_read(&mut self) {}
}

impl<T: Connection> Pump for T {
    fn pump_once(&mut self) -> Result<usize, Error> {
        let n = dispatch(self, |c| c.channel(), T::handle)?;
        self.after_read();
        Ok(n)
    }

    fn dispatch_queued(&mut self) -> Result<usize, Error> {
        dispatch_queued(self, |c| c.channel(), T::handle)
    }

    fn wait(&mut self, timeout: Duration) -> Result<(), Error> {
        wait(self.channel(), timeout)
    }

    fn watch(&self) -> Watch {
        watch(self.channel())
    }
}

/// A connection's socket as the main loop polls it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watch {
    pub fd: RawFd,
    /// Output is waiting for the socket to take it (poll for writability too).
    pub write: bool,
}

pub(crate) fn watch(ch: &Channel) -> Watch {
    let w = ch.watch();
    Watch {
        fd: w.fd,
        write: w.write || ch.has_messages_to_send(),
    }
}

/// One wait for the whole process: every D-Bus connection's socket, the caller's own fd (the
/// serial line) and a deadline, in a single `ppoll`, so that the main loop wakes once for
/// whichever comes first instead of sleeping in slices and polling each in turn. The fd array
/// is kept between waits: no allocation per wait once it has grown.
#[derive(Default)]
pub(crate) struct Poller {
    fds: Vec<libc::pollfd>,
    /// The sockets found ready by the last wait.
    ready: Vec<RawFd>,
}

impl Poller {
    pub(crate) fn new() -> Self {
        Poller::default()
    }

    /// Sleeps until a connection's socket or one of `extra` (serial lines) is ready, or until
    /// `deadline` (at once if it has passed; without a deadline, until something is ready). A
    /// signal ends the wait early. Returns whether one of `extra` is readable.
    pub(crate) fn wait(
        &mut self,
        conns: &[&mut dyn Pump],
        extra: &[RawFd],
        deadline: Option<Instant>,
    ) -> Result<bool, Error> {
        self.fds.clear();
        self.ready.clear();
        for c in conns {
            let w = c.watch();
            let events = if w.write {
                libc::POLLIN | libc::POLLOUT
            } else {
                libc::POLLIN
            };
            self.fds.push(libc::pollfd {
                fd: w.fd,
                events,
                revents: 0,
            });
        }
        for &fd in extra {
            self.fds.push(libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let timeout = deadline.map(|d| {
            let left = d.saturating_duration_since(Instant::now());
            // SAFETY: a timespec is plain data; all-zero is a valid value.
            let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
            ts.tv_sec = libc::time_t::try_from(left.as_secs()).unwrap_or(libc::time_t::MAX);
            // Below 10^9: fits a c_long of any width.
            ts.tv_nsec = left.subsec_nanos() as libc::c_long;
            ts
        });
        let ts_ptr = timeout
            .as_ref()
            .map_or(std::ptr::null(), |ts| ts as *const libc::timespec);
        // SAFETY: `fds` holds `fds.len()` valid pollfds; the timespec (if any) outlives the call;
        // no signal mask change.
        let n = unsafe {
            libc::ppoll(
                self.fds.as_mut_ptr(),
                self.fds.len() as libc::nfds_t,
                ts_ptr,
                std::ptr::null(),
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(Error::Poll(e.to_string()));
        }
        let mut extra_ready = false;
        for (i, p) in self.fds.iter().enumerate() {
            if p.revents == 0 {
                continue;
            }
            if i < conns.len() {
                self.ready.push(p.fd);
            } else {
                extra_ready = true;
            }
        }
        Ok(extra_ready)
    }

    /// Handles what the last wait found: each connection whose socket was ready reads and
    /// writes it without blocking; every connection handles the messages it has queued. All
    /// connections are served even when one fails; the first error is returned.
    pub(crate) fn dispatch(&mut self, conns: &mut [&mut dyn Pump]) -> Result<usize, Error> {
        let mut handled = 0;
        let mut first_err = None;
        for c in conns.iter_mut() {
            let result = if self.ready.contains(&c.watch().fd) {
                c.pump_once()
            } else {
                c.dispatch_queued()
            };
            match result {
                Ok(n) => handled += n,
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        self.ready.clear();
        first_err.map_or(Ok(handled), Err)
    }
}

/// Granularity of waiting on several connections: libdbus cannot wait on more than one, and std
/// has no poll(), so the waits alternate in slices. Messages wait at most this long.
const SLICE: Duration = Duration::from_millis(5);

/// Services every connection's pending messages for `budget` (the loop's idle time), then
/// returns. With zero budget it makes one non-blocking pass. All connections are pumped even when
/// one fails; the first error is returned.
pub fn pump_all(conns: &mut [&mut dyn Pump], budget: Duration) -> Result<(), Error> {
    let deadline = Instant::now() + budget;
    let mut first_err = None;
    loop {
        for c in conns.iter_mut() {
            if let Err(e) = c.pump_once() {
                first_err.get_or_insert(e);
            }
        }
        if first_err.is_some() {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let left = deadline - now;
        match conns {
            [] => std::thread::sleep(left),
            [one] => one.wait(left)?,
            _ => std::thread::sleep(left.min(SLICE)),
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Moves what the socket has into the incoming queue, without blocking.
pub(crate) fn read_nonblocking(ch: &Channel) -> Result<(), Error> {
    ch.read_write(Some(Duration::ZERO))
        .map_err(|()| Error::Disconnected)
}

/// Reads what the bus has sent and hands each message to `handle`; the number handled, or
/// `Disconnected` once the bus is gone. The message is taken off the channel before `handle`
/// runs, so the handler may use the object mutably.
pub(crate) fn dispatch<T>(
    obj: &mut T,
    channel: impl Fn(&T) -> &Channel,
    handle: impl FnMut(&mut T, &Message),
) -> Result<usize, Error> {
    read_nonblocking(channel(obj))?;
    dispatch_queued(obj, channel, handle)
}

/// Hands each message already in the incoming queue to `handle`, without reading the socket.
pub(crate) fn dispatch_queued<T>(
    obj: &mut T,
    channel: impl Fn(&T) -> &Channel,
    mut handle: impl FnMut(&mut T, &Message),
) -> Result<usize, Error> {
    let mut n = 0;
    while let Some(m) = channel(obj).pop_message() {
        if is_disconnect(&m) {
            return Err(Error::Disconnected);
        }
        handle(obj, &m);
        n += 1;
    }
    Ok(n)
}

/// libdbus queues this local signal when the bus connection is lost.
fn is_disconnect(m: &Message) -> bool {
    m.interface().as_deref() == Some("org.freedesktop.DBus.Local")
        && m.member().as_deref() == Some("Disconnected")
}

pub(crate) fn wait(ch: &Channel, timeout: Duration) -> Result<(), Error> {
    if ch.has_messages_to_send() {
        ch.flush();
    }
    ch.read_write(Some(timeout))
        .map_err(|()| Error::Disconnected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_from_argument() {
        assert_eq!(BusAddress::from_arg(Some("system")), BusAddress::System);
        assert_eq!(BusAddress::from_arg(Some("session")), BusAddress::Session);
        assert_eq!(
            BusAddress::from_arg(Some("unix:path=/tmp/x")),
            BusAddress::Address("unix:path=/tmp/x".into())
        );
    }
}
