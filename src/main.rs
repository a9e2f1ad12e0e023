//! dbus-modbus-client: command line, logging, signals; everything else is in the library.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use dbus_modbus_client::app::{App, list_models, probe};
use dbus_modbus_client::cli::{self, Command, USAGE};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// SIGINT and SIGTERM (runit's `sv stop`) end the main loop, which then exits cleanly.
fn stop_on_signals() -> std::io::Result<()> {
    // SAFETY: an all-zero sigaction is valid plain data; the handler only stores to an atomic,
    // which is async-signal-safe.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // As signal(2) in glibc: interrupted reads and writes restart.
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        for signal in [libc::SIGINT, libc::SIGTERM] {
            if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

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
            return match list_models(&mut stdout) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::FAILURE,
            };
        }
        Command::Probe(o) => {
            init_logging(o.debug);
            return match probe(&o, &mut stdout) {
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
    if let Err(e) = stop_on_signals() {
        log::warn!("cannot handle SIGINT/SIGTERM ({e}); a stop kills the daemon");
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
