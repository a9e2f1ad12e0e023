//! A transaction allocates nothing: the master thread's heap allocations are counted by a
//! wrapping global allocator while it reads and writes against the simulator.
//!
//! A test binary of its own, not a module of tests/e2e: the global allocator is per binary, and
//! would count (and slow) every other test there.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use dbus_modbus_client::modbus::{ReadFunction, RtuMaster, SerialSettings};
use modbus_sim::{SimConfig, Simulator};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|a| a.set(a.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(|a| a.get())
}

#[test]
fn successful_transactions_do_not_allocate() {
    let sim = Simulator::start(SimConfig::default()).unwrap();
    let mut m = RtuMaster::open(sim.tty_path(), SerialSettings::default()).unwrap();
    let mut fast = [0u16; 14];
    let mut big = [0u16; 125];
    // Warm up (first use of the port, lazily initialised statics).
    m.read_registers(2, ReadFunction::Input, 0, &mut fast)
        .unwrap();
    let before = allocations();
    for i in 0..50 {
        m.read_registers(2, ReadFunction::Input, 0, &mut fast)
            .unwrap();
        m.read_registers(1, ReadFunction::Input, 0, &mut big)
            .unwrap();
        m.write_register(1, 3, i).unwrap();
        m.write_registers(1, 122, &[1, 876]).unwrap();
    }
    assert_eq!(allocations() - before, 0);
    // The counter does count: a Vec on this thread shows up.
    let v = vec![0u8; 16];
    assert!(allocations() > before, "{v:?}");
}
