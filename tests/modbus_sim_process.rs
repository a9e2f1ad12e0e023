//! The `modbus-sim` process: link, line commands on stdin, write log on stdout.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use dbus_modbus_client::modbus::{ErrorKind, ReadFunction, RtuMaster, SerialSettings};

struct SimProcess {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl SimProcess {
    fn start(link: &std::path::Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_modbus-sim"))
            .arg("--link")
            .arg(link)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if tx.send(line.unwrap()).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            stdin,
            lines,
        }
    }

    fn next_line(&self) -> String {
        self.lines.recv_timeout(Duration::from_secs(20)).unwrap()
    }

    fn command(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// A command with output, used as a barrier: earlier commands are done when it answers.
    fn query(&mut self, line: &str) -> String {
        self.command(line);
        self.next_line()
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn process_serves_on_the_link_takes_commands_and_logs_writes() {
    let dir = std::env::temp_dir().join(format!("modbus-sim-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("ttyRS485");
    let mut sim = SimProcess::start(&link);
    let banner = sim.next_line();
    assert!(banner.starts_with("modbus-sim: "), "{banner}");
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );

    let mut m = RtuMaster::open(link.to_str().unwrap(), SerialSettings::default()).unwrap();
    sim.command("set 2 power -2500");
    assert_eq!(sim.query("get 2 power"), "-2500");
    let mut r = [0u16; 2];
    m.read_registers(2, ReadFunction::Input, 0x000C, &mut r)
        .unwrap();
    assert_eq!(
        f32::from_bits((u32::from(r[0]) << 16) | u32::from(r[1])),
        -2500.0
    );

    sim.command("set 1 hr3 42");
    assert_eq!(sim.query("get 1 hr3"), "42");

    m.write_register(1, 3, 77).unwrap();
    let logged = sim.next_line();
    assert!(
        logged.starts_with("write ") && logged.ends_with("unit 1 hr 3 = 77"),
        "{logged}"
    );
    assert!(sim.query("writes").ends_with("unit 1 hr 3 = 77"));

    sim.command("fault 2 exception 6 once");
    assert!(sim.query("get 1 hr3").starts_with("77"));
    let e = m
        .read_registers(2, ReadFunction::Input, 0x000C, &mut r)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Exception);
    m.read_registers(2, ReadFunction::Input, 0x000C, &mut r)
        .unwrap();

    assert!(sim.query("bogus").starts_with("error:"));
    drop(sim);
    let _ = std::fs::remove_dir_all(&dir);
}
