//! The test-support localsettings stand-in (tests/support) as a process, for the demo: Victron's
//! localsettings cannot be installed here. Serves com.victronenergy.settings on the bus named by
//! DBUS_SESSION_BUS_ADDRESS until killed.

#[path = "../tests/support/mod.rs"]
mod support;

fn main() {
    let Some(address) = std::env::var_os("DBUS_SESSION_BUS_ADDRESS") else {
        eprintln!("fake-settings: DBUS_SESSION_BUS_ADDRESS is not set");
        std::process::exit(2);
    };
    let _settings = support::FakeSettings::start(&address.to_string_lossy());
    eprintln!("fake-settings: com.victronenergy.settings is up");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
