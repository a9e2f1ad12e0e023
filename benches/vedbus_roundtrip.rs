//! D-Bus layer figures: method-call round trips against a published service, the cost of one
//! batched ItemsChanged, and resident memory over many update cycles.
//! `cargo bench --bench vedbus_roundtrip` (full); under `cargo test --all-targets`: a smoke pass.

use dbus::Message;
use dbus_modbus_client::vedbus::{BusAddress, Format, Service, Value, Writable, pump_all};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use testkit::{Client, PrivateBus, percentile, rss_kib};

const NAME: &str = "com.victronenergy.grid.bench";

/// A grid-meter-like service: 40 paths.
fn meter(bus: &BusAddress) -> Service {
    let mut s = Service::connect(bus).expect("connect");
    s.add_path(
        "/DeviceInstance",
        Value::Int(40),
        Format::Plain,
        Writable::No,
    );
    s.add_path(
        "/Ac/PowerLimit",
        Value::Double(0.0),
        Format::unit("W", 0),
        Writable::Double {
            min: 0.0,
            max: 3000.0,
        },
    );
    for i in 0..38 {
        s.add_path(
            &format!("/Ac/X{i}/Power"),
            Value::Double(f64::from(i)),
            Format::unit("W", 0),
            Writable::No,
        );
    }
    s
}

fn report(what: &str, mut t: Vec<Duration>) {
    t.sort();
    let mean = t.iter().sum::<Duration>() / t.len().max(1) as u32;
    println!(
        "{what:<40} n={:<6} mean={:>8.1?} p50={:>8.1?} p99={:>8.1?}",
        t.len(),
        mean,
        percentile(&t, 50.0).unwrap_or_default(),
        percentile(&t, 99.0).unwrap_or_default()
    );
}

/// utime + stime of this process, in clock ticks (USER_HZ, 100 on Linux).
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_comm = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let get = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Fields 14 and 15 of stat; after "comm)" the state is field 3, i.e. index 0 here.
    get(11) + get(12)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (calls, cycles) = if full { (5000, 100_000) } else { (20, 200) };

    let private_bus = PrivateBus::start();
    let bus = BusAddress::Address(private_bus.address.clone());

    // Round trips: the service pumped by its own loop thread, a client calling it.
    let mut svc = meter(&bus);
    svc.register(NAME).expect("register");
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let server = std::thread::spawn(move || {
        while !stop2.load(Ordering::SeqCst) {
            let _ = svc.pump(Duration::from_millis(20));
            let _ = svc.take_writes().count();
        }
    });
    let client = Client::connect(&private_bus.address);
    for (path, method) in [
        ("/Ac/X1/Power", "GetValue"),
        ("/", "GetItems"),
        ("/Ac/PowerLimit", "SetValue"),
    ] {
        let mut t = Vec::with_capacity(calls);
        for _ in 0..calls {
            let mut m = Message::new_method_call(NAME, path, "com.victronenergy.BusItem", method)
                .expect("msg");
            if method == "SetValue" {
                m = m.append1(dbus::arg::Variant(1.0f64));
            }
            let start = Instant::now();
            client
                .ch
                .send_with_reply_and_block(m, Duration::from_secs(10))
                .expect("reply");
            t.push(start.elapsed());
        }
        report(&format!("{method} {path} round trip (40 paths)"), t);
    }
    stop.store(true, Ordering::SeqCst);
    let _ = server.join();

    // One loop iteration's D-Bus work: 20 changed values, one ItemsChanged, a zero-budget pump.
    let mut svc = meter(&bus);
    svc.register("com.victronenergy.grid.bench2")
        .expect("register");
    // Timings go into a pre-filled ring so that recording them does not grow the RSS measured.
    let mut t = vec![Duration::ZERO; cycles.min(10_000)];
    let checkpoints = [cycles / 10, cycles / 2, cycles - 1];
    let mut rss = Vec::with_capacity(checkpoints.len());
    for n in 0..cycles {
        let start = Instant::now();
        for i in 0..20 {
            svc.set(
                &format!("/Ac/X{i}/Power"),
                Value::Double((n * 20 + i) as f64),
            );
        }
        svc.flush();
        let _ = svc.pump(Duration::ZERO);
        let slot = n % t.len();
        t[slot] = start.elapsed();
        if checkpoints.contains(&n) {
            rss.push(format!(
                "{} cycles: {} KiB",
                n + 1,
                rss_kib(std::process::id())
            ));
        }
    }
    report("20 x set + flush + pump(0)", t);
    println!("VmRSS after {}", rss.join(", "));

    // Idle cost of the loop's D-Bus wait: pump_all over three connections with nothing to do.
    let idle = if full {
        Duration::from_secs(5)
    } else {
        Duration::from_millis(50)
    };
    let mut a = meter(&bus);
    let mut b = meter(&bus);
    let mut c = meter(&bus);
    let cpu0 = cpu_ticks();
    let start = Instant::now();
    while start.elapsed() < idle {
        let _ = pump_all(&mut [&mut a, &mut b, &mut c], Duration::from_millis(100));
    }
    let ticks = cpu_ticks() - cpu0;
    println!(
        "idle pump_all, 3 connections, {:?}: {} CPU ticks (1 tick = 10 ms) = {:.2} % of one core",
        idle,
        ticks,
        ticks as f64 * 10.0 / idle.as_millis() as f64 * 100.0
    );
}
