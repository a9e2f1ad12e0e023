//! The life of a unit on the bus: identify → online (service registered) → lost after a while
//! without a good read (service removed) → probed every few seconds → online again.
//!
//! Pure: the caller reports successes and failures with their time and acts on the transitions.

use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// Not identified yet, or lost: only probed, at `probe_interval`.
    Probing,
    Online,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transition {
    CameOnline,
    Lost,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Timing {
    /// Without a good read for this long, an online unit is lost (official drivers: 5 s).
    pub lost_after: Duration,
    /// How often a unit that is not online is probed.
    pub probe_interval: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            lost_after: Duration::from_secs(5),
            probe_interval: Duration::from_secs(3),
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Lifecycle {
    state: State,
    timing: Timing,
    last_good: Option<Instant>,
    next_probe: Option<Instant>,
    /// The first probe is due from here.
    created: Instant,
}

impl Lifecycle {
    pub(crate) fn new(timing: Timing) -> Self {
        Lifecycle {
            state: State::Probing,
            timing,
            last_good: None,
            next_probe: None,
            created: Instant::now(),
        }
    }

    pub(crate) fn is_online(&self) -> bool {
        self.state == State::Online
    }

    /// Whether a probing unit should be probed now.
    #[cfg(test)]
    fn probe_due(&self, now: Instant) -> bool {
        self.state == State::Probing && self.next_probe.is_none_or(|t| now >= t)
    }

    /// When a unit that is not online is next probed (`None` while online; the past if due).
    pub(crate) fn probe_at(&self) -> Option<Instant> {
        (self.state == State::Probing).then_some(self.next_probe.unwrap_or(self.created))
    }

    /// A probe failed: wait a probe interval before the next.
    pub(crate) fn probe_failed(&mut self, now: Instant) {
        self.next_probe = Some(now + self.timing.probe_interval);
    }

    /// Identification succeeded (and the service is registered).
    pub(crate) fn identified(&mut self, now: Instant) -> Option<Transition> {
        self.last_good = Some(now);
        (self.state != State::Online).then(|| {
            self.state = State::Online;
            Transition::CameOnline
        })
    }

    /// A good read from an online unit.
    pub(crate) fn read_ok(&mut self, now: Instant) {
        self.last_good = Some(now);
    }

    /// Called every loop iteration (and after a failed read): declares an online unit lost when
    /// its last good read is too old. A single failed poll is not a transition.
    pub(crate) fn check(&mut self, now: Instant) -> Option<Transition> {
        let stale = self
            .last_good
            .is_none_or(|t| now.saturating_duration_since(t) >= self.timing.lost_after);
        (self.state == State::Online && stale).then(|| {
            self.state = State::Probing;
            self.next_probe = Some(now);
            Transition::Lost
        })
    }

    /// When an online unit would be lost if no good read arrives.
    pub(crate) fn lost_deadline(&self) -> Option<Instant> {
        (self.state == State::Online)
            .then(|| self.last_good.map(|t| t + self.timing.lost_after))
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn goes_online_lost_and_back_with_one_transition_each() {
        let t0 = Instant::now();
        let mut l = Lifecycle::new(Timing::default());
        assert!(l.probe_due(t0));
        l.probe_failed(t0);
        assert!(!l.probe_due(t0 + 2 * S));
        assert!(l.probe_due(t0 + 3 * S));
        assert_eq!(l.identified(t0 + 3 * S), Some(Transition::CameOnline));
        assert!(
            !l.probe_due(t0 + 4 * S),
            "online units are read, not probed"
        );
        l.read_ok(t0 + 4 * S);
        // Failed polls inside the window are no transition...
        assert_eq!(l.check(t0 + 8 * S), None);
        // ...5 s without a good read is.
        assert_eq!(l.check(t0 + 9 * S), Some(Transition::Lost));
        assert_eq!(l.check(t0 + 10 * S), None, "one log line per transition");
        assert!(l.probe_due(t0 + 9 * S), "a lost unit is probed at once");
        l.probe_failed(t0 + 9 * S);
        assert!(!l.probe_due(t0 + 11 * S));
        assert_eq!(l.identified(t0 + 12 * S), Some(Transition::CameOnline));
        assert_eq!(l.identified(t0 + 13 * S), None);
    }

    #[test]
    fn lost_deadline_follows_the_last_good_read() {
        let t0 = Instant::now();
        let mut l = Lifecycle::new(Timing::default());
        assert_eq!(l.lost_deadline(), None);
        l.identified(t0);
        l.read_ok(t0 + S);
        assert_eq!(l.lost_deadline(), Some(t0 + 6 * S));
    }
}
