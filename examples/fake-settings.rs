//! The localsettings stand-in of testkit as a process, for the demo and the scripts: Victron's
//! localsettings cannot be installed here. Serves com.victronenergy.settings on the bus named
//! by DBUS_SESSION_BUS_ADDRESS until killed.

fn main() {
    let Some(address) = std::env::var_os("DBUS_SESSION_BUS_ADDRESS") else {
        eprintln!("fake-settings: DBUS_SESSION_BUS_ADDRESS is not set");
        std::process::exit(2);
    };
    let _settings = testkit::FakeSettings::start(&address.to_string_lossy());
    eprintln!("fake-settings: com.victronenergy.settings is up");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
