//! Thousands of random and mutated frames through the pure response parser: it must never
//! panic and never accept a frame whose CRC is wrong.

use dbus_modbus_client::modbus::{
    Request, Response, crc_ok, crc16, foreign_frame_len, parse_response, reply_frame_len,
};

use testkit::Rng;

/// The values of a 0x10 write: only their number reaches the reply.
static VALUES: [u16; 123] = [0; 123];

fn random_request(rng: &mut Rng) -> Request<'static> {
    let unit = 1 + rng.below(3) as u8;
    let addr = rng.next_u64() as u16;
    let count = 1 + rng.below(125) as u16;
    match rng.below(4) {
        0 => Request::ReadHolding { unit, addr, count },
        1 => Request::ReadInput { unit, addr, count },
        2 => Request::WriteSingle {
            unit,
            addr,
            value: rng.next_u64() as u16,
        },
        _ => Request::WriteMultiple {
            unit,
            addr,
            values: &VALUES[..usize::from(count).min(VALUES.len())],
        },
    }
}

/// The correct reply to `req`, so that mutations start from something almost right.
fn valid_reply(req: &Request, rng: &mut Rng) -> Vec<u8> {
    let mut f = vec![req.unit(), req.function()];
    match *req {
        Request::ReadHolding { count, .. } | Request::ReadInput { count, .. } => {
            f.push((count * 2) as u8);
            f.extend((0..count * 2).map(|_| rng.byte()));
        }
        Request::WriteSingle { addr, value, .. } => {
            f.extend(addr.to_be_bytes());
            f.extend(value.to_be_bytes());
        }
        Request::WriteMultiple { addr, values, .. } => {
            f.extend(addr.to_be_bytes());
            f.extend((values.len() as u16).to_be_bytes());
        }
    }
    let crc = crc16(&f);
    f.extend(crc.to_le_bytes());
    f
}

fn mutate(frame: &mut Vec<u8>, rng: &mut Rng) {
    match rng.below(6) {
        0 => {
            let i = rng.below(frame.len());
            frame[i] ^= 1 << rng.below(8);
        }
        1 => {
            let i = rng.below(frame.len());
            frame[i] = rng.byte();
        }
        2 => frame.truncate(rng.below(frame.len())),
        3 => frame.extend((0..1 + rng.below(4)).map(|_| rng.byte())),
        4 => {
            let i = rng.below(frame.len());
            frame.remove(i);
        }
        _ => {
            // Mutate, then fix the CRC: valid frames that are wrong in content.
            let i = rng.below(frame.len().saturating_sub(2).max(1));
            frame[i] = rng.byte();
            if frame.len() >= 4 {
                let body = frame.len() - 2;
                let crc = crc16(&frame[..body]);
                frame[body..].copy_from_slice(&crc.to_le_bytes());
            }
        }
    }
}

#[test]
fn random_and_mutated_frames_never_panic_and_bad_crc_is_never_accepted() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut accepted = 0;
    let mut rejected = 0;
    for round in 0..6000 {
        let req = random_request(&mut rng);
        let mut frame = if round % 3 == 0 {
            (0..rng.below(300)).map(|_| rng.byte()).collect()
        } else {
            valid_reply(&req, &mut rng)
        };
        for _ in 0..rng.below(3) {
            if !frame.is_empty() {
                mutate(&mut frame, &mut rng);
            }
        }
        let result = parse_response(&req, &frame);
        // The helpers the reader uses on the same bytes must not panic either.
        let _ = reply_frame_len(&frame);
        let _ = foreign_frame_len(&req, &frame);
        match result {
            Ok(response) => {
                accepted += 1;
                assert!(crc_ok(&frame), "accepted a bad CRC: {frame:02x?}");
                assert_eq!(frame.len(), req.response_len());
                assert_eq!(frame[0], req.unit());
                assert_eq!(frame[1], req.function());
                if let Response::Registers(data) = response {
                    assert_eq!(data.len(), req.response_len() - 5);
                }
            }
            Err(_) => rejected += 1,
        }
    }
    // Both outcomes really happen, so the assertions above were exercised.
    assert!(accepted > 500, "accepted {accepted}");
    assert!(rejected > 2000, "rejected {rejected}");
}

#[test]
fn every_single_bit_flip_of_a_valid_reply_is_rejected() {
    let mut rng = Rng(42);
    let req = Request::ReadInput {
        unit: 2,
        addr: 0,
        count: 14,
    };
    let frame = valid_reply(&req, &mut rng);
    assert!(parse_response(&req, &frame).is_ok());
    for i in 0..frame.len() * 8 {
        let mut bad = frame.clone();
        bad[i / 8] ^= 1 << (i % 8);
        assert!(parse_response(&req, &bad).is_err(), "bit {i}");
    }
}
