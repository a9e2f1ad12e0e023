//! The `modbus-sim` process: link, line commands on stdin, write log on stdout. A test of this
//! crate (Cargo hands a package's tests its own binaries only), so the master is a minimal one
//! written here on the simulator's framing, not the daemon's.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use modbus_sim::frame::{FN_READ_HOLDING, FN_READ_INPUT, FN_WRITE_SINGLE, crc_ok, with_crc};
use serialport::{SerialPort, TTYPort};

/// One request, one reply: the reply's frame (exceptions included), CRC checked.
struct Master(TTYPort);

impl Master {
    fn open(path: &std::path::Path) -> Master {
        let mut port = serialport::new(path.to_str().unwrap(), 9600)
            .open_native()
            .unwrap();
        port.set_timeout(Duration::from_secs(5)).unwrap();
        Master(port)
    }

    fn transact(&mut self, request: &[u8], reply_len: usize) -> Vec<u8> {
        self.0.write_all(&with_crc(request)).unwrap();
        let mut reply = vec![0u8; 3];
        self.0.read_exact(&mut reply).unwrap();
        let len = if reply[1] & 0x80 != 0 { 5 } else { reply_len };
        reply.resize(len, 0);
        self.0.read_exact(&mut reply[3..]).unwrap();
        assert!(crc_ok(&reply), "{reply:02x?}");
        reply
    }

    /// Input registers `addr`, `addr + 1` of `unit`, or the exception code.
    fn read_input_pair(&mut self, unit: u8, addr: u16) -> Result<[u16; 2], u8> {
        let [hi, lo] = addr.to_be_bytes();
        let r = self.transact(&[unit, FN_READ_INPUT, hi, lo, 0, 2], 9);
        if r[1] & 0x80 != 0 {
            return Err(r[2]);
        }
        Ok([
            u16::from_be_bytes([r[3], r[4]]),
            u16::from_be_bytes([r[5], r[6]]),
        ])
    }

    /// One holding register of `unit`, or the exception code.
    fn read_holding(&mut self, unit: u8, addr: u16) -> Result<u16, u8> {
        let [hi, lo] = addr.to_be_bytes();
        let r = self.transact(&[unit, FN_READ_HOLDING, hi, lo, 0, 1], 7);
        if r[1] & 0x80 != 0 {
            return Err(r[2]);
        }
        Ok(u16::from_be_bytes([r[3], r[4]]))
    }

    fn write_register(&mut self, unit: u8, addr: u16, value: u16) {
        let ([ah, al], [vh, vl]) = (addr.to_be_bytes(), value.to_be_bytes());
        let request = [unit, FN_WRITE_SINGLE, ah, al, vh, vl];
        assert_eq!(self.transact(&request, 8), with_crc(&request));
    }
}

struct SimProcess {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl SimProcess {
    fn start(link: &std::path::Path) -> Self {
        Self::start_with(link, &[])
    }

    fn start_with(link: &std::path::Path, args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_modbus-sim"))
            .arg("--link")
            .arg(link)
            .args(args)
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
    /// Write log lines printed meanwhile are skipped.
    fn query(&mut self, line: &str) -> String {
        self.command(line);
        loop {
            let out = self.next_line();
            if !out.starts_with("write ") {
                return out;
            }
        }
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

    let mut m = Master::open(&link);
    sim.command("set 2 power -2500");
    assert_eq!(sim.query("get 2 power"), "-2500");
    let r = m.read_input_pair(2, 0x000C).unwrap();
    assert_eq!(
        f32::from_bits((u32::from(r[0]) << 16) | u32::from(r[1])),
        -2500.0
    );

    sim.command("set 1 hr3 42");
    assert_eq!(sim.query("get 1 hr3"), "42");

    m.write_register(1, 3, 77);
    let logged = sim.next_line();
    assert!(
        logged.starts_with("write ") && logged.ends_with("unit 1 hr 3 = 77"),
        "{logged}"
    );
    assert!(sim.query("writes").ends_with("unit 1 hr 3 = 77"));

    sim.command("fault 2 exception 6 once");
    assert!(sim.query("get 1 hr3").starts_with("77"));
    assert_eq!(m.read_input_pair(2, 0x000C), Err(6));
    assert!(m.read_input_pair(2, 0x000C).is_ok());

    assert!(sim.query("bogus").starts_with("error:"));
    drop(sim);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn process_selects_the_models_and_their_quirks() {
    let dir = std::env::temp_dir().join(format!("modbus-sim-quirks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("ttyRS485");
    let mut sim = SimProcess::start_with(
        &link,
        &[
            "--growatt-model",
            "min-6000tl-x",
            "--growatt-rated-va",
            "0",
            "--growatt-hr2",
            "1",
            "--growatt-hr2-locked",
            "--meter-model",
            "sdm630",
        ],
    );
    assert!(sim.next_line().starts_with("modbus-sim: "));
    let mut m = Master::open(&link);
    // The TL-X answers Illegal Function for the 125–249 group, and HR6–7 read 0.
    assert_eq!(m.read_holding(1, 209), Err(1));
    assert_eq!(m.read_holding(1, 43), Ok(5200));
    assert_eq!(m.read_holding(1, 7), Ok(0));
    assert_eq!(m.read_holding(2, 0xFC02), Ok(112));
    // HR2 locked at 1: the write is acknowledged, HR2 stays, HR3 writes are stored.
    m.write_register(1, 2, 0);
    assert_eq!(m.read_holding(1, 2), Ok(1));
    m.write_register(1, 3, 50);
    assert_eq!(sim.query("nv-writes 1"), "1");
    sim.command("night 1");
    sim.query("nv-writes 1"); // a barrier: the commands before it are done
    assert_eq!(m.read_holding(1, 3), Ok(50), "remembered with HR2 = 1");
    sim.command("hr2-locked 1 off");
    sim.query("nv-writes 1");
    m.write_register(1, 2, 0);
    sim.command("night 1");
    assert_eq!(sim.query("get 1 hr3"), "255", "not remembered with HR2 = 0");
    // Another model at the same units.
    sim.command("model 1 min-4200tl-xe");
    sim.command("model 2 sdm230-no-ident");
    assert_eq!(sim.query("get 1 hr43"), "5100");
    assert_eq!(sim.query("nv-writes 1"), "0", "a new unit");
    assert_eq!(m.read_holding(1, 209).map(|w| w >> 8), Ok(u16::from(b'N')));
    assert_eq!(m.read_holding(2, 0xFC00), Err(2));
    assert!(sim.query("model 2 min-6000tl-x").starts_with("error:"));
    drop(sim);
    let _ = std::fs::remove_dir_all(&dir);
}
