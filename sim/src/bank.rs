//! A device's register space: contiguous defined blocks, as real devices have, and the Modbus
//! exception codes they answer with.

/// Holding (0x03/0x06/0x10) or input (0x04) registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterKind {
    Holding,
    Input,
}

pub const EXCEPTION_ILLEGAL_FUNCTION: u8 = 1;
pub const EXCEPTION_ILLEGAL_ADDRESS: u8 = 2;
pub const EXCEPTION_ILLEGAL_VALUE: u8 = 3;

/// Contiguous defined register blocks; a read or write must stay inside one block, as real
/// devices answer exception 2 for reads spanning undefined addresses.
#[derive(Debug, Clone, Default)]
pub struct Bank {
    blocks: Vec<(u16, Vec<u16>)>,
}

impl Bank {
    /// Blocks given as `(first, end)` address pairs, `end` exclusive, all registers 0.
    pub fn with_blocks(blocks: &[(u16, u16)]) -> Self {
        Self {
            blocks: blocks
                .iter()
                .map(|&(start, end)| (start, vec![0; usize::from(end - start)]))
                .collect(),
        }
    }

    fn block_mut(&mut self, addr: u16, count: u16) -> Option<&mut [u16]> {
        let end = u32::from(addr) + u32::from(count);
        self.blocks.iter_mut().find_map(|(start, regs)| {
            let block_end = u32::from(*start) + regs.len() as u32;
            if addr >= *start && end <= block_end {
                let from = usize::from(addr - *start);
                regs.get_mut(from..from + usize::from(count))
            } else {
                None
            }
        })
    }

    /// Whether a defined block holds `addr`.
    pub fn contains(&self, addr: u16) -> bool {
        self.blocks.iter().any(|(start, regs)| {
            addr >= *start && u32::from(addr) < u32::from(*start) + regs.len() as u32
        })
    }

    pub fn read(&mut self, addr: u16, count: u16) -> Result<&[u16], u8> {
        self.block_mut(addr, count)
            .map(|r| &*r)
            .ok_or(EXCEPTION_ILLEGAL_ADDRESS)
    }

    pub fn write(&mut self, addr: u16, values: &[u16]) -> Result<(), u8> {
        let count = u16::try_from(values.len()).map_err(|_| EXCEPTION_ILLEGAL_VALUE)?;
        let regs = self
            .block_mut(addr, count)
            .ok_or(EXCEPTION_ILLEGAL_ADDRESS)?;
        regs.copy_from_slice(values);
        Ok(())
    }

    pub fn get(&mut self, addr: u16) -> Option<u16> {
        self.read(addr, 1).ok().and_then(|r| r.first().copied())
    }

    /// A 32-bit value from two registers, high word first.
    pub fn get_u32(&mut self, addr: u16) -> Option<u32> {
        let r = self.read(addr, 2).ok()?;
        Some((u32::from(r[0]) << 16) | u32::from(r[1]))
    }

    pub(crate) fn set(&mut self, addr: u16, value: u16) {
        let _ = self.write(addr, &[value]);
    }

    pub(crate) fn set_u32(&mut self, addr: u16, value: u32) {
        let _ = self.write(addr, &[(value >> 16) as u16, value as u16]);
    }

    pub(crate) fn set_f32(&mut self, addr: u16, value: f64) {
        self.set_u32(addr, (value as f32).to_bits());
    }

    /// ASCII text, two characters per register, padded with NULs.
    pub(crate) fn set_text(&mut self, addr: u16, regs: u16, text: &str) {
        let mut bytes = text.bytes();
        for i in 0..regs {
            let hi = bytes.next().unwrap_or(0);
            let lo = bytes.next().unwrap_or(0);
            self.set(addr + i, u16::from_be_bytes([hi, lo]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_must_stay_inside_a_block() {
        let mut b = Bank::with_blocks(&[(0, 4), (10, 12)]);
        b.write(2, &[7, 8]).unwrap();
        assert_eq!(b.read(1, 3).unwrap(), &[0, 7, 8]);
        assert_eq!(b.read(3, 2), Err(EXCEPTION_ILLEGAL_ADDRESS));
        assert_eq!(b.write(11, &[1, 2]), Err(EXCEPTION_ILLEGAL_ADDRESS));
        b.set_u32(10, 0x0001_0002);
        assert_eq!(b.get_u32(10), Some(0x0001_0002));
        b.set_text(0, 2, "abc");
        assert_eq!(b.read(0, 2).unwrap(), &[u16::from_be_bytes(*b"ab"), 0x6300]);
    }
}
