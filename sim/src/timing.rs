//! Wire timing of an RS485 line, computed here rather than taken from the daemon, so that the
//! simulator's notion of "realistic" is an independent check of the daemon's.

use std::time::Duration;

/// Serial parity; 8 data bits and 1 stop bit always.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Parity {
    #[default]
    None,
    Even,
}

/// The line the realistic timing is computed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineSettings {
    pub baud: u32,
    pub parity: Parity,
}

impl Default for LineSettings {
    fn default() -> Self {
        Self {
            baud: 9600,
            parity: Parity::None,
        }
    }
}

impl LineSettings {
    /// Bits per character: start, 8 data, parity if any, 1 stop.
    pub fn bits_per_char(&self) -> u32 {
        match self.parity {
            Parity::None => 10,
            Parity::Even => 11,
        }
    }

    /// Time on the wire of `bytes` characters.
    pub fn wire_time(&self, bytes: usize) -> Duration {
        let bits = bytes as u64 * u64::from(self.bits_per_char());
        Duration::from_nanos(bits * 1_000_000_000 / u64::from(self.baud.max(1)))
    }

    /// Silence that ends a frame: 3.5 characters, or 1.75 ms above 19200 baud (Modbus over
    /// serial line, §2.5.1.1).
    pub fn frame_silence(&self) -> Duration {
        if self.baud > 19_200 {
            Duration::from_micros(1750)
        } else {
            self.wire_time(7) / 2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nine_thousand_six_hundred_baud_8n1() {
        let line = LineSettings::default();
        // 41 bytes of 10 bits at 9600 baud.
        assert_eq!(line.wire_time(41), Duration::from_nanos(42_708_333));
        assert_eq!(line.frame_silence(), Duration::from_nanos(3_645_833));
        let fast = LineSettings {
            baud: 115_200,
            parity: Parity::Even,
        };
        assert_eq!(fast.frame_silence(), Duration::from_micros(1750));
        assert_eq!(fast.wire_time(1), Duration::from_nanos(95_486));
    }
}
