//! Fuzzes the SetValue value conversion (`Writable::coerce` on a `Value`).
//!
//! Input layout: byte 0 picks the path kind (int, double, text, one-of, read-only), bytes 1-8 its
//! bounds (two i32 or, for doubles, two f32 widened), byte 9 the value's type (int, double,
//! text, text list, invalid); the rest is the value (4 or 8 bytes for numbers, UTF-8 text with
//! 0xFF separating list items).
//!
//! Invariants: never a panic; an accepted value has the path's type and lies within its bounds
//! (finite for doubles, one of the allowed strings for one-of); a read-only path accepts nothing;
//! a number within the bounds is never refused.
#![no_main]

use dbus_modbus_client::vedbus::{Refusal, Value, Writable};
use libfuzzer_sys::fuzz_target;

const ROLES: [&str; 4] = ["grid", "pvinverter", "acload", "genset"];

fn writable(kind: u8, b: [u8; 8]) -> Writable {
    let lo = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let hi = i32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    match kind % 5 {
        0 => Writable::Int {
            min: lo.min(hi),
            max: lo.max(hi),
        },
        1 => {
            let lo = f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            let hi = f64::from(f32::from_le_bytes([b[4], b[5], b[6], b[7]]));
            if !lo.is_finite() || !hi.is_finite() {
                return Writable::Double {
                    min: -1e9,
                    max: 1e9,
                };
            }
            Writable::Double {
                min: lo.min(hi),
                max: lo.max(hi),
            }
        }
        2 => Writable::Text,
        3 => Writable::OneOf(ROLES.iter().map(|r| r.to_string()).collect()),
        _ => Writable::No,
    }
}

fn value(kind: u8, rest: &[u8]) -> Option<Value> {
    Some(match kind % 5 {
        0 => Value::Int(i32::from_le_bytes(rest.get(..4)?.try_into().ok()?)),
        1 => Value::Double(f64::from_le_bytes(rest.get(..8)?.try_into().ok()?)),
        2 => Value::Text(String::from_utf8_lossy(rest).into_owned()),
        3 => Value::TextList(
            rest.split(|b| *b == 0xFF)
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect(),
        ),
        _ => Value::Invalid,
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((header, rest)) = data.split_first_chunk::<10>() else {
        return;
    };
    let [wk, b0, b1, b2, b3, b4, b5, b6, b7, vk] = *header;
    let w = writable(wk, [b0, b1, b2, b3, b4, b5, b6, b7]);
    let Some(v) = value(vk, rest) else {
        return;
    };
    for v in [v.clone(), v.normalized()] {
        let result = w.coerce(&v);
        match (&w, &result) {
            (Writable::No, r) => assert_eq!(*r, Err(Refusal::ReadOnly)),
            (Writable::Int { min, max }, Ok(Value::Int(i))) => {
                assert!(min <= i && i <= max);
                assert_eq!(v.as_i32(), Some(*i));
            }
            (Writable::Int { min, max }, Err(_)) => {
                if let Some(i) = v.as_i32() {
                    assert!(i < *min || i > *max, "refused valid {v:?}");
                }
            }
            (Writable::Double { min, max }, Ok(Value::Double(d))) => {
                assert!(d.is_finite() && min <= d && d <= max);
            }
            (Writable::Double { min, max }, Err(_)) => {
                if let Some(d) = v.as_f64() {
                    assert!(d < *min || d > *max, "refused valid {v:?}");
                }
            }
            (Writable::Text, Ok(out)) => assert!(matches!(out, Value::Text(_))),
            (Writable::OneOf(allowed), Ok(Value::Text(s))) => assert!(allowed.contains(s)),
            (Writable::Text | Writable::OneOf(_), Err(_)) => {}
            (_, Ok(out)) => panic!("{w:?} accepted {v:?} as {out:?}"),
        }
    }
});
