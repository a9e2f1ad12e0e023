//! Deterministic randomized test of the SetValue value conversion (issue 7): thousands of random
//! values (ints, doubles with NaN/inf, numeric strings with spaces, exponents and garbage, lists,
//! empty arrays) against every kind of writable path. `Writable::coerce` must never panic, an
//! accepted value is always of the path's type and within its range, and a valid request is
//! never refused. A subset goes from a client through a real service on a private bus: a
//! refused write (non-zero) leaves the value unchanged, an accepted one stores the coerced value.

use dbus::arg::Variant;
use dbus_modbus_client::vedbus::{Format, Refusal, Service, Value, Writable};
use testkit::{Client, PrivateBus, Rng};

use crate::in_process::{Pumped, bus_address, on_the_bus};

const ROLES: [&str; 4] = ["grid", "pvinverter", "acload", "genset"];

fn random_int(rng: &mut Rng) -> i32 {
    match rng.below(4) {
        0 => *rng.pick(&[0, 1, 2, 3, -1, i32::MIN, i32::MAX, 100_000, -100_000]),
        1 => rng.below(7) as i32 - 3,
        _ => rng.next_u64() as i32,
    }
}

fn random_double(rng: &mut Rng) -> f64 {
    match rng.below(5) {
        0 => *rng.pick(&[
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -0.0,
            f64::MIN_POSITIVE / 2.0,
            f64::MAX,
            f64::MIN,
            1e9,
            -1e9,
            1e9 + 1.0,
            2_147_483_648.0,
            -2_147_483_649.0,
        ]),
        1 => f64::from(random_int(rng)),
        2 => f64::from(random_int(rng)) + 0.5,
        3 => f64::from_bits(rng.next_u64()),
        _ => (rng.next_u64() as i64 as f64) / 1e6,
    }
}

fn random_text(rng: &mut Rng) -> String {
    match rng.below(6) {
        0 => rng
            .pick(&[
                "",
                " ",
                "0",
                "1",
                "2",
                " 1 ",
                "\t2\n",
                "1e0",
                "1E1",
                "2e-1",
                "+2",
                "-0",
                "1.",
                ".5",
                "1.0",
                "0x10",
                "nan",
                "NaN",
                "inf",
                "-inf",
                "infinity",
                "1e400",
                "-1e400",
                "1_000",
                "1,5",
                "١",
                "grid",
                "Grid",
                " grid",
                "genset\0",
                "acload ",
                "pvinverter",
                "999999999999",
                "-2147483648",
                "2147483647",
                "2147483648",
            ])
            .to_string(),
        1 => ROLES[rng.below(ROLES.len())].to_string(),
        2 => format!("{}", random_double(rng)),
        3 => format!(" {} ", random_int(rng)),
        4 => format!("{}e{}", random_int(rng) % 100, random_int(rng) % 12),
        _ => (0..rng.below(40))
            .map(|_| char::from(32 + rng.below(95) as u8))
            .collect(),
    }
}

fn random_value(rng: &mut Rng) -> Value {
    match rng.below(6) {
        0 => Value::Int(random_int(rng)),
        1 => Value::Double(random_double(rng)),
        2 | 3 => Value::Text(random_text(rng)),
        4 => Value::TextList((0..rng.below(3)).map(|_| random_text(rng)).collect()),
        _ => Value::Invalid,
    }
}

fn random_writable(rng: &mut Rng) -> Writable {
    match rng.below(5) {
        0 => {
            let (a, b) = (random_int(rng), random_int(rng));
            let (min, max) = if rng.below(2) == 0 {
                (a.min(b), a.max(b))
            } else {
                *rng.pick(&[(0, 2), (0, 1), (5, 5), (i32::MIN, i32::MAX), (0, 1_000_000)])
            };
            Writable::Int { min, max }
        }
        1 => {
            let (a, b) = (random_double(rng), random_double(rng));
            let (min, max) = if rng.below(2) == 0 && a.is_finite() && b.is_finite() {
                (a.min(b), a.max(b))
            } else {
                *rng.pick(&[(-1e9, 1e9), (0.0, 0.0), (0.0, 4200.0), (f64::MIN, f64::MAX)])
            };
            Writable::Double { min, max }
        }
        2 => Writable::Text,
        3 => Writable::OneOf(ROLES.iter().map(|r| r.to_string()).collect()),
        _ => Writable::No,
    }
}

/// Checks one conversion; returns whether it was accepted.
fn check(w: &Writable, v: &Value) -> bool {
    let result = w.coerce(v);
    match (w, &result) {
        (Writable::No, r) => assert_eq!(*r, Err(Refusal::ReadOnly), "{v:?}"),
        (Writable::Int { min, max }, Ok(out)) => {
            let Value::Int(i) = out else {
                panic!("{w:?} {v:?} -> {out:?}")
            };
            assert!(min <= i && i <= max, "{w:?} {v:?} -> {i}");
            assert_eq!(v.as_i32(), Some(*i), "{v:?} changed value");
        }
        (Writable::Int { min, max }, Err(_)) => {
            // Refused: not an integer, or out of range.
            if let Some(i) = v.as_i32() {
                assert!(i < *min || i > *max, "{w:?} refused valid {v:?}");
            }
        }
        (Writable::Double { min, max }, Ok(out)) => {
            let Value::Double(d) = out else {
                panic!("{w:?} {v:?} -> {out:?}")
            };
            assert!(d.is_finite() && min <= d && d <= max, "{w:?} {v:?} -> {d}");
        }
        (Writable::Double { min, max }, Err(_)) => {
            if let Some(d) = v.as_f64() {
                assert!(d < *min || d > *max, "{w:?} refused valid {v:?}");
            }
        }
        (Writable::Text, Ok(out)) => {
            assert!(matches!(out, Value::Text(_)), "{v:?} -> {out:?}");
            assert!(
                matches!(v, Value::Text(_) | Value::Int(_) | Value::Double(_)),
                "{v:?}"
            );
        }
        (Writable::Text, Err(_)) => {
            assert!(matches!(v, Value::TextList(_) | Value::Invalid), "{v:?}")
        }
        (Writable::OneOf(allowed), Ok(out)) => {
            let Value::Text(s) = out else {
                panic!("{v:?} -> {out:?}")
            };
            assert!(allowed.contains(s), "{v:?} -> {s:?}");
            assert_eq!(v, out);
        }
        (Writable::OneOf(allowed), Err(_)) => {
            if let Value::Text(s) = v {
                assert!(!allowed.contains(s), "refused allowed {s:?}");
            }
        }
    }
    result.is_ok()
}

#[test]
fn coerce_never_panics_and_keeps_accepted_values_in_type_and_range() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..20_000 {
        let w = random_writable(&mut rng);
        let v = random_value(&mut rng);
        if check(&w, &v) {
            accepted += 1;
        } else {
            refused += 1;
        }
        // The stored form of whatever arrives (normalized) is checked as well.
        let _ = check(&w, &v.clone().normalized());
    }
    // Both outcomes are exercised in quantity, so the checks above are not vacuous.
    assert!(
        accepted > 2_000 && refused > 2_000,
        "{accepted} / {refused}"
    );
}

#[test]
fn known_conversions() {
    let int = Writable::Int { min: 0, max: 2 };
    let t = |s: &str| Value::Text(s.into());
    assert_eq!(int.coerce(&t(" 1 ")), Ok(Value::Int(1)));
    assert_eq!(int.coerce(&t("2e0")), Ok(Value::Int(2)));
    assert_eq!(int.coerce(&Value::Double(1.0)), Ok(Value::Int(1)));
    for bad in [
        t("1.5"),
        t("abc"),
        t(""),
        t("nan"),
        t("inf"),
        Value::Double(f64::NAN),
        Value::Double(1.5),
        Value::TextList(vec!["1".into()]),
        Value::Invalid,
    ] {
        assert_eq!(int.coerce(&bad), Err(Refusal::WrongType), "{bad:?}");
    }
    assert_eq!(int.coerce(&Value::Int(3)), Err(Refusal::OutOfRange));
    let dbl = Writable::Double {
        min: -1e9,
        max: 1e9,
    };
    assert_eq!(dbl.coerce(&t("1e3")), Ok(Value::Double(1000.0)));
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        assert_eq!(dbl.coerce(&Value::Double(bad)), Err(Refusal::WrongType));
    }
    assert_eq!(dbl.coerce(&t("1e400")), Err(Refusal::WrongType));
    assert_eq!(dbl.coerce(&Value::Double(2e9)), Err(Refusal::OutOfRange));
    let roles = Writable::OneOf(ROLES.iter().map(|r| r.to_string()).collect());
    assert_eq!(roles.coerce(&t(" grid")), Err(Refusal::OutOfRange));
    assert_eq!(roles.coerce(&Value::Int(0)), Err(Refusal::WrongType));
}

/// D-Bus strings cannot carry NUL (the client library cuts them there).
fn wire_text(rng: &mut Rng) -> String {
    random_text(rng).replace('\0', "")
}

/// What a client sends: one of the D-Bus types writers use, and a few nobody should.
#[derive(Debug)]
enum Wire {
    I32(i32),
    F64(f64),
    Str(String),
    StrList(Vec<String>),
    EmptyInts,
    Ints(Vec<i32>),
    Bool(bool),
    Byte(u8),
    U32(u32),
    I64(i64),
    Struct(i32, String),
    Nested(i32),
}

impl Wire {
    fn random(rng: &mut Rng) -> Wire {
        match rng.below(12) {
            0 => Wire::I32(random_int(rng)),
            1 => Wire::F64(random_double(rng)),
            2 | 3 => Wire::Str(wire_text(rng)),
            4 => Wire::StrList((0..rng.below(3)).map(|_| wire_text(rng)).collect()),
            5 => Wire::EmptyInts,
            6 => Wire::Ints(vec![random_int(rng)]),
            7 => Wire::Bool(rng.below(2) == 1),
            8 => Wire::Byte(rng.next_u64() as u8),
            9 => Wire::U32(rng.next_u64() as u32),
            10 => Wire::I64(rng.next_u64() as i64 >> rng.below(64)),
            _ => match rng.below(2) {
                0 => Wire::Struct(random_int(rng), wire_text(rng)),
                _ => Wire::Nested(random_int(rng)),
            },
        }
    }

    /// The value the service reads from it, where the mapping is plain (None: must be refused
    /// or is exotic; only the unchanged/typed invariants are checked then).
    fn expected(&self) -> Option<Value> {
        Some(match self {
            Wire::I32(i) => Value::Int(*i),
            Wire::F64(d) => Value::Double(*d).normalized(),
            Wire::Str(s) => Value::Text(s.clone()),
            Wire::StrList(l) => Value::TextList(l.clone()).normalized(),
            Wire::EmptyInts => Value::Invalid,
            Wire::Bool(b) => Value::Int(i32::from(*b)),
            Wire::Byte(b) => Value::Int(i32::from(*b)),
            _ => return None,
        })
    }

    fn send(&self, c: &Client, dest: &str, path: &str) -> i32 {
        match self {
            Wire::I32(v) => c.set_value(dest, path, *v),
            Wire::F64(v) => c.set_value(dest, path, *v),
            Wire::Str(v) => c.set_value(dest, path, v.clone()),
            Wire::StrList(v) => c.set_value(dest, path, v.clone()),
            Wire::EmptyInts => c.set_value(dest, path, Vec::<i32>::new()),
            Wire::Ints(v) => c.set_value(dest, path, v.clone()),
            Wire::Bool(v) => c.set_value(dest, path, *v),
            Wire::Byte(v) => c.set_value(dest, path, *v),
            Wire::U32(v) => c.set_value(dest, path, *v),
            Wire::I64(v) => c.set_value(dest, path, *v),
            Wire::Struct(i, s) => c.set_value(dest, path, (*i, s.clone())),
            Wire::Nested(i) => c.set_value(dest, path, Variant(*i)),
        }
    }
}

/// Whether a value read back from the bus has the type of the path.
fn same_type(path_kind: &Writable, v: &testkit::Value) -> bool {
    match path_kind {
        Writable::Int { .. } => matches!(v, testkit::Value::Int(_)),
        Writable::Double { .. } => matches!(v, testkit::Value::Double(_)),
        Writable::Text | Writable::OneOf(_) => matches!(v, testkit::Value::Text(_)),
        Writable::No => false,
    }
}

#[test]
fn random_writes_through_a_real_service() {
    const NAME: &str = "com.victronenergy.test.setvalue";
    let bus = PrivateBus::start();
    let mut svc = Service::connect(&bus_address(&bus)).unwrap();
    let paths = [
        ("/Int", Value::Int(0), Writable::Int { min: 0, max: 2 }),
        (
            "/Double",
            Value::Double(1.0),
            Writable::Double {
                min: -1e9,
                max: 1e9,
            },
        ),
        ("/Text", Value::Text("x".into()), Writable::Text),
        (
            "/Role",
            Value::Text("grid".into()),
            Writable::OneOf(ROLES.iter().map(|r| r.to_string()).collect()),
        ),
        ("/ReadOnly", Value::Int(5), Writable::No),
    ];
    for (p, v, w) in &paths {
        svc.add_path(p, v.clone(), Format::Plain, w.clone());
    }
    svc.register(NAME).unwrap();
    let svc = Pumped::start(svc);
    let client = Client::connect(&bus.address);
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..600 {
        let (path, _, w) = rng.pick(&paths);
        let wire = Wire::random(&mut rng);
        let before = client.value(NAME, path).unwrap();
        let code = wire.send(&client, NAME, path);
        let after = client.value(NAME, path).unwrap();
        // Keep the bounded write queue from filling: the daemon takes writes every cycle.
        svc.lock().take_writes().for_each(drop);
        if code == 0 {
            accepted += 1;
            assert!(same_type(w, &after), "{path} {wire:?} stored {after:?}");
        } else {
            refused += 1;
            assert_eq!(after, before, "{path} refused {wire:?} but changed");
        }
        if let Some(v) = wire.expected() {
            match w.coerce(&v) {
                Ok(stored) => {
                    assert_eq!(code, 0, "{path} refused {wire:?}");
                    assert_eq!(after, on_the_bus(&stored), "{path} {wire:?}");
                }
                Err(_) => assert_ne!(code, 0, "{path} accepted {wire:?}"),
            }
        }
    }
    assert!(accepted > 50 && refused > 50, "{accepted} / {refused}");
}
