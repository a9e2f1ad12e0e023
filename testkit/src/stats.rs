//! Figures over recorded events (the gaps between updates in a window, percentiles) and a
//! process' resident memory.

use std::time::{Duration, Instant};

/// Updates inside a window and the gaps between them. The gaps at the edges count: from the
/// last update before the window, and up to its end (a lower bound of that gap).
#[derive(Debug, Clone)]
pub struct Gaps {
    /// Updates inside the window.
    pub updates: usize,
    pub window: Duration,
    /// The longest gap; the whole window if no update came before it.
    pub longest: Duration,
    /// Every gap as (its start after the window's start, its length), in order.
    pub all: Vec<(Duration, Duration)>,
}

impl Gaps {
    /// Updates per second inside the window.
    pub fn per_second(&self) -> f64 {
        self.updates as f64 / self.window.as_secs_f64()
    }

    /// The gaps longer than `limit`, for a failure message.
    pub fn longer_than(&self, limit: Duration) -> Vec<(Duration, Duration)> {
        self.all
            .iter()
            .copied()
            .filter(|(_, g)| *g > limit)
            .collect()
    }
}

/// The gaps between the instants of `seen` (any order) inside `[from, to]`.
pub fn gaps(seen: &[Instant], from: Instant, to: Instant) -> Gaps {
    let before = seen.iter().copied().filter(|t| *t < from).max();
    let mut inside: Vec<Instant> = seen
        .iter()
        .copied()
        .filter(|t| *t >= from && *t <= to)
        .collect();
    inside.sort();
    let times: Vec<Instant> = before
        .into_iter()
        .chain(inside.iter().copied())
        .chain([to])
        .collect();
    let all: Vec<(Duration, Duration)> = times
        .windows(2)
        .map(|w| (w[0].saturating_duration_since(from), w[1] - w[0]))
        .collect();
    let window = to.saturating_duration_since(from);
    Gaps {
        updates: inside.len(),
        window,
        longest: all
            .iter()
            .map(|(_, g)| *g)
            .max()
            .filter(|_| before.is_some())
            .unwrap_or(window),
        all,
    }
}

/// Nearest-rank percentile (`percent` in 0..=100) of sorted samples; None for no samples.
pub fn percentile<T: Copy>(sorted: &[T], percent: f64) -> Option<T> {
    let rank = ((percent / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted.get(rank.min(sorted.len()).checked_sub(1)?).copied()
}

/// Resident memory of process `pid` in KiB (VmRSS); 0 if unreadable.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_count_the_edges() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let seen = [at(0), at(150), at(400), at(450)];
        let g = gaps(&seen, at(100), at(600));
        assert_eq!(g.updates, 3);
        // 0 -> 150 (starts 100 ms before the window), 150 -> 400, 400 -> 450, 450 -> 600.
        assert_eq!(g.longest, Duration::from_millis(250));
        assert_eq!(
            g.longer_than(Duration::from_millis(149)),
            [
                (Duration::ZERO, Duration::from_millis(150)),
                (Duration::from_millis(50), Duration::from_millis(250)),
                (Duration::from_millis(350), Duration::from_millis(150))
            ]
        );
        assert!((g.per_second() - 6.0).abs() < 1e-9);
        // Nothing before the window: the whole window is one gap.
        assert_eq!(
            gaps(&seen[2..], at(100), at(600)).longest,
            Duration::from_millis(500)
        );
    }

    #[test]
    fn nearest_rank() {
        let v = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        assert_eq!(percentile(&v, 50.0), Some(5));
        assert_eq!(percentile(&v, 95.0), Some(10));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&v, 100.0), Some(10));
        assert_eq!(percentile::<u8>(&[], 50.0), None);
    }
}
