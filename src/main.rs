//! dbus-modbus-client: command line, logging, signals; everything else is in the library.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use dbus_modbus_client::app::{App, probe};
use dbus_modbus_client::cli::{self, Command, USAGE};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: i32) {
    STOP.store(true, Ordering::Relaxed);
}

unsafe extern "C" {
    // libc's signal(2); std links libc already, so no crate is needed for one call.
    fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
}

const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

fn main() -> ExitCode {
    let command = match cli::parse(std::env::args_os().skip(1).collect()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dbus-modbus-client: {e}\nTry --help.");
            return ExitCode::from(2);
        }
    };
    let mut stdout = std::io::stdout();
    let opts = match command {
        Command::Help => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Command::Version => {
            println!("dbus-modbus-client {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Command::Models => {
            return match probe::list_models(&mut stdout) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::FAILURE,
            };
        }
        Command::Probe(o) => {
            init_logging(o.debug);
            return match probe::probe(&o, &mut stdout) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("dbus-modbus-client: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Run(o) => o,
    };
    init_logging(opts.debug);
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        signal(SIGINT, on_signal);
        signal(SIGTERM, on_signal);
    }
    log::info!("dbus-modbus-client {} starting", env!("CARGO_PKG_VERSION"));
    let result = App::start(opts).and_then(|mut app| app.run(&STOP));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(debug: bool) {
    let level = if debug {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Info
    };
    // Only fails if a logger is already set, which cannot happen here.
    let _ = simple_logger::SimpleLogger::new().with_level(level).init();
}
