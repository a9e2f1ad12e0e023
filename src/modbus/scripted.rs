//! A scripted serial line on a virtual clock, for unit tests of the master: the test says which
//! bytes arrive when (stale input, late replies, a babbling line) and how the devices answer each
//! request; the line checks every request frame and records when it went. Time only moves when
//! the master waits or sends, so every test is exact and instant.

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use super::{Line, SerialSettings, crc16};

/// `body` with its CRC appended: a frame as it goes on the wire.
pub(crate) fn with_crc(body: &[u8]) -> Vec<u8> {
    let mut f = body.to_vec();
    f.extend_from_slice(&crc16(body).to_le_bytes());
    f
}

/// A request the master sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SentFrame {
    pub(crate) bytes: Vec<u8>,
    /// When its first byte went.
    pub(crate) at: Instant,
    /// How long the line had been quiet before it: since the last byte received or sent.
    pub(crate) idle_before: Duration,
}

struct Exchange {
    request: Vec<u8>,
    /// Frames sent back, each starting this long after the end of the request.
    replies: Vec<(Duration, Vec<u8>)>,
}

/// Noise: one byte per character time from `next` on, until `until` (None: for ever).
struct Babble {
    next: Instant,
    until: Option<Instant>,
    byte: u8,
}

pub(crate) struct ScriptedLine {
    settings: SerialSettings,
    start: Instant,
    now: Instant,
    /// Bytes on their way in, each with the instant it is complete at the receiver; sorted.
    incoming: VecDeque<(Instant, u8)>,
    exchanges: VecDeque<Exchange>,
    sent: Vec<SentFrame>,
    babble: Option<Babble>,
    /// The end of the last byte received (read or not) or sent, before `now`.
    last_activity: Instant,
    fail_sends: Option<io::ErrorKind>,
}

impl ScriptedLine {
    pub(crate) fn new(settings: SerialSettings) -> Self {
        let start = Instant::now();
        Self {
            settings,
            start,
            now: start,
            incoming: VecDeque::new(),
            exchanges: VecDeque::new(),
            sent: Vec::new(),
            babble: None,
            last_activity: start,
            fail_sends: None,
        }
    }

    /// The instant the script's offsets count from.
    pub(crate) fn start(&self) -> Instant {
        self.start
    }

    /// `bytes` arrive back to back, the first one starting `after` the start of the script.
    pub(crate) fn arrive(&mut self, after: Duration, bytes: &[u8]) {
        let at = self.start + after;
        self.schedule(at, bytes);
    }

    /// The next request must be `request`; each `(delay, frame)` of `replies` then starts
    /// `delay` after the request's last byte. No replies: the devices stay silent.
    pub(crate) fn expect(&mut self, request: &[u8], replies: &[(Duration, &[u8])]) {
        self.exchanges.push_back(Exchange {
            request: request.to_vec(),
            replies: replies.iter().map(|(d, f)| (*d, f.to_vec())).collect(),
        });
    }

    /// Noise from `after` on, one `byte` per character time, for `lasting` (None: for ever).
    pub(crate) fn babble(&mut self, after: Duration, lasting: Option<Duration>, byte: u8) {
        let next = self.start + after + self.char_time();
        self.babble = Some(Babble {
            next,
            until: lasting.map(|d| self.start + after + d),
            byte,
        });
    }

    /// Every send fails with `kind` from now on (a vanished adapter).
    pub(crate) fn fail_sends(&mut self, kind: io::ErrorKind) {
        self.fail_sends = Some(kind);
    }

    pub(crate) fn sent(&self) -> &[SentFrame] {
        &self.sent
    }

    /// Scripted requests the master has not sent (yet).
    pub(crate) fn unsent(&self) -> usize {
        self.exchanges.len()
    }

    /// Bytes that have arrived but were not read.
    pub(crate) fn unread(&mut self) -> usize {
        self.materialise();
        self.incoming.iter().filter(|(t, _)| *t <= self.now).count()
    }

    fn char_time(&self) -> Duration {
        self.settings.wire_time(1)
    }

    fn schedule(&mut self, at: Instant, bytes: &[u8]) {
        let char_time = self.char_time();
        let mut t = at;
        for &b in bytes {
            t += char_time;
            self.incoming.push_back((t, b));
        }
        // Stable: bytes of one frame keep their order.
        self.incoming.make_contiguous().sort_by_key(|(t, _)| *t);
    }

    /// Turns the babble up to now into incoming bytes.
    fn materialise(&mut self) {
        let char_time = self.char_time();
        let Some(babble) = &mut self.babble else {
            return;
        };
        let mut noise = Vec::new();
        while babble.next <= self.now && babble.until.is_none_or(|u| babble.next <= u) {
            noise.push((babble.next, babble.byte));
            babble.next += char_time;
        }
        if !noise.is_empty() {
            self.incoming.extend(noise);
            self.incoming.make_contiguous().sort_by_key(|(t, _)| *t);
        }
    }

    fn next_arrival(&self) -> Option<Instant> {
        let queued = self.incoming.front().map(|(t, _)| *t);
        let babble = self
            .babble
            .as_ref()
            .filter(|b| b.until.is_none_or(|u| b.next <= u))
            .map(|b| b.next);
        match (queued, babble) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

impl Line for ScriptedLine {
    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        self.materialise();
        if let Some(kind) = self.fail_sends {
            return Err(kind.into());
        }
        let last_in = self
            .incoming
            .iter()
            .map(|(t, _)| *t)
            .filter(|t| *t <= self.now)
            .max();
        let last = last_in.map_or(self.last_activity, |t| t.max(self.last_activity));
        self.sent.push(SentFrame {
            bytes: frame.to_vec(),
            at: self.now,
            idle_before: self.now.saturating_duration_since(last),
        });
        self.now += self.settings.wire_time(frame.len());
        self.last_activity = self.now;
        let exchange = self
            .exchanges
            .pop_front()
            .unwrap_or_else(|| panic!("unscripted request {frame:02x?}"));
        assert_eq!(frame, exchange.request, "request {}", self.sent.len());
        for (delay, reply) in exchange.replies {
            self.schedule(self.now + delay, &reply);
        }
        Ok(())
    }

    fn read_ready(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.materialise();
        let mut n = 0;
        for slot in buf.iter_mut() {
            match self.incoming.front() {
                Some(&(t, b)) if t <= self.now => {
                    *slot = b;
                    n += 1;
                    self.last_activity = self.last_activity.max(t);
                    self.incoming.pop_front();
                }
                _ => break,
            }
        }
        Ok(n)
    }

    fn wait(&mut self, until: Instant) -> io::Result<()> {
        self.materialise();
        let wake = match self.next_arrival() {
            Some(t) if t <= self.now => return Ok(()),
            Some(t) => t.min(until),
            None => until,
        };
        self.now = self.now.max(wake);
        Ok(())
    }

    fn now(&self) -> Instant {
        self.now
    }
}
