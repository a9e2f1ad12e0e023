//! The device side of Modbus RTU framing: request lengths, CRC, replies. Written for the
//! simulator alone (the daemon has its own), so the two check each other.

use crc::{CRC_16_MODBUS, Crc};

const MODBUS_CRC: Crc<u16> = Crc::<u16>::new(&CRC_16_MODBUS);

pub const FN_READ_HOLDING: u8 = 0x03;
pub const FN_READ_INPUT: u8 = 0x04;
pub const FN_WRITE_SINGLE: u8 = 0x06;
pub const FN_WRITE_MULTIPLE: u8 = 0x10;

/// CRC-16/MODBUS of `bytes`, sent low byte first.
pub fn crc16(bytes: &[u8]) -> u16 {
    MODBUS_CRC.checksum(bytes)
}

/// Whether the last two bytes of `frame` are the CRC of the rest.
pub fn crc_ok(frame: &[u8]) -> bool {
    match frame.len().checked_sub(2) {
        Some(body) if body >= 2 => frame[body..] == crc16(&frame[..body]).to_le_bytes(),
        _ => false,
    }
}

/// `body` followed by its CRC.
pub fn with_crc(body: &[u8]) -> Vec<u8> {
    let mut f = body.to_vec();
    f.extend_from_slice(&crc16(body).to_le_bytes());
    f
}

/// Total length of the request that starts `buf`, as soon as its header tells; None while too
/// short to tell. A function code no simulated device implements is answered by its 8-byte
/// shape (address and count), which is what a device's receiver would assume.
pub fn request_len(buf: &[u8]) -> Option<usize> {
    match *buf.get(1)? {
        FN_WRITE_MULTIPLE => Some(9 + usize::from(*buf.get(6)?)),
        _ => Some(8),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_of_a_known_request() {
        // Read input registers 0..2 of unit 1: the frame found in every Modbus guide.
        let frame = [0x01, 0x04, 0x00, 0x00, 0x00, 0x02, 0x71, 0xCB];
        assert_eq!(crc16(&frame[..6]), 0xCB71);
        assert!(crc_ok(&frame));
        let mut bad = frame;
        bad[3] ^= 1;
        assert!(!crc_ok(&bad));
        assert!(!crc_ok(&frame[..3]));
        assert_eq!(with_crc(&frame[..6]), frame);
    }

    #[test]
    fn request_lengths() {
        assert_eq!(request_len(&[1]), None);
        assert_eq!(request_len(&[1, FN_READ_INPUT]), Some(8));
        assert_eq!(request_len(&[1, FN_WRITE_SINGLE]), Some(8));
        assert_eq!(request_len(&[1, FN_WRITE_MULTIPLE, 0, 0, 0, 2]), None);
        assert_eq!(
            request_len(&[1, FN_WRITE_MULTIPLE, 0, 0, 0, 2, 4]),
            Some(13)
        );
    }
}
