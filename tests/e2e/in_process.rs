//! For the tests that run the daemon's vedbus code in this process: a pumping thread, the
//! private bus as the library addresses it, and the library's values as a client reads them.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use dbus_modbus_client::vedbus::{self, BusAddress, Pump};
use testkit::{PrivateBus, Worker};

/// The address of `bus` as the library takes it.
pub fn bus_address(bus: &PrivateBus) -> BusAddress {
    BusAddress::Address(bus.address.clone())
}

/// A library value as a client reads it back from the bus (non-finite and empty are invalid).
pub fn on_the_bus(v: &vedbus::Value) -> testkit::Value {
    match v.clone().normalized() {
        vedbus::Value::Invalid => testkit::Value::Invalid,
        vedbus::Value::Int(i) => testkit::Value::Int(i),
        vedbus::Value::Double(d) => testkit::Value::Double(d),
        vedbus::Value::Text(s) => testkit::Value::Text(s),
        vedbus::Value::TextList(l) => testkit::Value::TextList(l),
    }
}

/// Pumps `obj` on a thread until dropped; the test locks it to act on it between pumps, so
/// that blocking test clients can talk to it.
pub struct Pumped<T: Pump + Send + 'static> {
    pub obj: Arc<Mutex<T>>,
    _worker: Worker,
}

impl<T: Pump + Send + 'static> Pumped<T> {
    pub fn start(obj: T) -> Pumped<T> {
        let obj = Arc::new(Mutex::new(obj));
        let o = obj.clone();
        let worker = Worker::spawn(move |stop| {
            while !stop.load(Ordering::SeqCst) {
                let r = {
                    let mut g = o.lock().unwrap();
                    vedbus::pump_all(&mut [&mut *g], Duration::from_millis(5))
                };
                if r.is_err() {
                    break;
                }
                std::thread::yield_now();
            }
        });
        Pumped {
            obj,
            _worker: worker,
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.obj.lock().unwrap()
    }
}
