//! install.sh / uninstall.sh / service scripts, run for real against a fake root (ROOT=...).
//!
//! Each test builds its own fake GX tree (/data and /service present, as on Venus OS), runs the
//! shell scripts as subprocesses, and compares full listings (type, mode, content or link target).
//! `svc`, `svstat` and `multilog` are replaced through PATH by recorders, so a call that must not
//! happen under ROOT is caught.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

const BOOT_LINE: &str = "/data/dbus-modbus-client/enable.sh";
const FAKE_BINARY: &str = "#!/bin/sh\necho \"args: $*\"\n";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch directory removed on drop; holds the fake root and the recorder tools.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Scratch {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "dmc-install-{}-{}-{}",
            name,
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("root/data")).unwrap();
        fs::create_dir_all(dir.join("root/service")).unwrap();
        fs::create_dir_all(dir.join("bin")).unwrap();
        write_mode(&dir.join("dbus-modbus-client"), FAKE_BINARY, 0o755);
        // Recorders: any call lands in calls.log.
        for tool in ["svc", "svstat", "multilog"] {
            let script = format!(
                "#!/bin/sh\necho \"{tool} $*\" >>\"{}\"\n",
                dir.join("calls.log").display()
            );
            write_mode(&dir.join("bin").join(tool), &script, 0o755);
        }
        Scratch { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    fn app_dir(&self) -> PathBuf {
        self.root().join("data/dbus-modbus-client")
    }

    fn rc_local(&self) -> PathBuf {
        self.root().join("data/rc.local")
    }

    fn calls(&self) -> String {
        fs::read_to_string(self.dir.join("calls.log")).unwrap_or_default()
    }

    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        let path = format!(
            "{}:{}",
            self.dir.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        cmd.env("ROOT", self.root())
            .env("BIN", self.dir.join("dbus-modbus-client"))
            .env("PATH", path);
        cmd
    }

    fn install(&self) -> Output {
        let out = self.command(&repo().join("install.sh")).output().unwrap();
        assert!(out.status.success(), "install.sh failed: {}", text(&out));
        out
    }

    fn uninstall(&self) -> Output {
        // The installed copy, as a user on the GX would run it.
        let out = self
            .command(&self.app_dir().join("uninstall.sh"))
            .output()
            .unwrap();
        assert!(out.status.success(), "uninstall.sh failed: {}", text(&out));
        out
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn write_mode(path: &Path, content: &str, mode: u32) {
    fs::write(path, content).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

#[derive(Debug, PartialEq, Eq)]
enum Entry {
    Dir { mode: u32 },
    File { mode: u32, content: Vec<u8> },
    Link { target: PathBuf },
}

/// Every path under `root` with its type, mode and content (files) or target (links).
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Entry> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
        for item in fs::read_dir(dir).unwrap() {
            let path = item.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            let mode = meta.permissions().mode() & 0o7777;
            if meta.file_type().is_symlink() {
                let target = fs::read_link(&path).unwrap();
                out.insert(rel, Entry::Link { target });
            } else if meta.is_dir() {
                out.insert(rel, Entry::Dir { mode });
                walk(root, &path, out);
            } else {
                let content = fs::read(&path).unwrap();
                out.insert(rel, Entry::File { mode, content });
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

#[test]
fn install_into_a_fresh_root_lays_out_the_service() {
    let s = Scratch::new("fresh");
    s.install();
    let app = s.app_dir();

    for (rel, want) in [
        ("dbus-modbus-client", 0o755),
        ("enable.sh", 0o755),
        ("uninstall.sh", 0o755),
        ("service/run", 0o755),
        ("service/log/run", 0o755),
        ("config", 0o644),
    ] {
        assert_eq!(mode(&app.join(rel)), want, "mode of {rel}");
    }
    for rel in ["", "service", "service/log"] {
        assert_eq!(mode(&app.join(rel)), 0o755, "mode of dir {rel:?}");
    }
    assert_eq!(
        fs::read_to_string(app.join("dbus-modbus-client")).unwrap(),
        FAKE_BINARY
    );
    for (installed, source) in [
        ("service/run", "service/run"),
        ("service/log/run", "service/log/run"),
        ("enable.sh", "service/enable.sh"),
        ("uninstall.sh", "uninstall.sh"),
        ("config", "service/config.example"),
    ] {
        assert_eq!(
            fs::read(app.join(installed)).unwrap(),
            fs::read(repo().join(source)).unwrap(),
            "{installed} differs from {source}"
        );
    }

    let link = s.root().join("service/dbus-modbus-client");
    assert_eq!(fs::read_link(&link).unwrap(), app.join("service"));

    assert_eq!(
        fs::read_to_string(s.rc_local()).unwrap(),
        format!("#!/bin/bash\n{BOOT_LINE}\n")
    );
    assert_eq!(mode(&s.rc_local()), 0o755);

    // Nothing outside the root may be driven under ROOT.
    assert_eq!(s.calls(), "");
}

#[test]
fn second_install_changes_nothing() {
    let s = Scratch::new("idempotent");
    write_mode(&s.rc_local(), "#!/bin/sh\necho other driver\n", 0o755);
    s.install();
    let first = snapshot(&s.root());
    let out = s.install();
    assert_eq!(snapshot(&s.root()), first);
    assert!(
        !text(&out).contains("installed /") && !text(&out).contains("added "),
        "second run reported changes: {}",
        text(&out)
    );
    assert_eq!(s.calls(), "");
}

#[test]
fn install_keeps_an_existing_rc_local_and_adds_its_line_once() {
    let s = Scratch::new("rclocal");
    // Foreign content, last line without its newline, not executable.
    let foreign = "#!/bin/bash\n/data/other-driver/start.sh\necho hello";
    write_mode(&s.rc_local(), foreign, 0o644);

    s.install();
    s.install();

    let rc = fs::read_to_string(s.rc_local()).unwrap();
    assert_eq!(rc, format!("{foreign}\n{BOOT_LINE}\n"));
    assert_eq!(rc.lines().filter(|l| *l == BOOT_LINE).count(), 1);
    assert_eq!(mode(&s.rc_local()) & 0o111, 0o111, "rc.local executable");
}

#[test]
fn reinstall_keeps_the_users_config_and_updates_the_binary() {
    let s = Scratch::new("upgrade");
    s.install();
    let config = s.app_dir().join("config");
    fs::write(&config, "TTY=/dev/serial/by-id/usb-test\nRATE=19200\n").unwrap();
    let new_binary = "#!/bin/sh\necho new\n";
    write_mode(&s.dir.join("dbus-modbus-client"), new_binary, 0o755);

    let out = s.install();
    assert!(text(&out).contains("installed"), "{}", text(&out));
    assert_eq!(
        fs::read_to_string(&config).unwrap(),
        "TTY=/dev/serial/by-id/usb-test\nRATE=19200\n"
    );
    assert_eq!(
        fs::read_to_string(s.app_dir().join("dbus-modbus-client")).unwrap(),
        new_binary
    );
}

#[test]
fn uninstall_restores_the_tree_as_it_was() {
    // With a foreign rc.local (kept, minus our line) and without one (created, then removed).
    for existing in [Some("#!/bin/bash\n/data/other-driver/start.sh\n"), None] {
        let s = Scratch::new("uninstall");
        if let Some(content) = existing {
            write_mode(&s.rc_local(), content, 0o755);
        }
        let before = snapshot(&s.root());
        s.install();
        assert_ne!(snapshot(&s.root()), before);
        let out = s.uninstall();
        assert_eq!(snapshot(&s.root()), before, "{}", text(&out));
        assert_eq!(s.calls(), "");
    }
}

#[test]
fn uninstall_keeps_foreign_lines_written_after_install() {
    let s = Scratch::new("foreign");
    s.install();
    let mut rc = fs::read_to_string(s.rc_local()).unwrap();
    rc.push_str("/data/later-driver/start.sh\n");
    fs::write(s.rc_local(), &rc).unwrap();

    s.uninstall();
    assert_eq!(
        fs::read_to_string(s.rc_local()).unwrap(),
        "#!/bin/bash\n/data/later-driver/start.sh\n"
    );
    assert!(!s.app_dir().exists());
    assert!(!s.root().join("service/dbus-modbus-client").exists());
}

#[test]
fn install_refuses_a_tree_that_is_not_a_gx() {
    let s = Scratch::new("notgx");
    fs::remove_dir(s.root().join("service")).unwrap();
    let before = snapshot(&s.root());
    let out = s.command(&repo().join("install.sh")).output().unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("not a Venus OS device"),
        "{}",
        text(&out)
    );
    assert_eq!(snapshot(&s.root()), before);
}

#[test]
fn install_refuses_a_missing_binary() {
    let s = Scratch::new("nobin");
    fs::remove_file(s.dir.join("dbus-modbus-client")).unwrap();
    let before = snapshot(&s.root());
    let out = s.command(&repo().join("install.sh")).output().unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("no binary"), "{}", text(&out));
    assert_eq!(snapshot(&s.root()), before);
}

#[test]
fn enable_repairs_the_service_link() {
    // At boot /service is empty again; enable.sh (from rc.local) must bring the link back.
    let s = Scratch::new("enable");
    s.install();
    let link = s.root().join("service/dbus-modbus-client");
    fs::remove_file(&link).unwrap();
    let out = s.command(&s.app_dir().join("enable.sh")).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(fs::read_link(&link).unwrap(), s.app_dir().join("service"));
}

/// Runs the installed service/run the way supervise does: from the service directory.
fn run_service(s: &Scratch) -> Output {
    let service = s.root().join("service/dbus-modbus-client");
    s.command(&service.join("run"))
        .current_dir(&service)
        .output()
        .unwrap()
}

#[test]
fn run_passes_the_original_flags_with_the_configured_port() {
    let s = Scratch::new("run");
    s.install();
    // A real pseudo-terminal stands in for the RS485 adapter.
    let (_master, slave) = serialport::TTYPort::pair().unwrap();
    let tty = serialport::SerialPort::name(&slave).unwrap();
    let config = s.app_dir().join("config");
    let example = fs::read_to_string(&config).unwrap();
    fs::write(
        &config,
        example.replace("TTY=/dev/ttyUSB0", &format!("TTY={tty}")),
    )
    .unwrap();

    let out = run_service(&s);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(text(&out), format!("args: -x -s {tty} -r 9600\n"));

    fs::write(
        &config,
        format!("TTY={tty}\nRATE=19200\nEXTRA_ARGS=\"-d --foo\"\n"),
    )
    .unwrap();
    let out = run_service(&s);
    assert_eq!(text(&out), format!("args: -x -s {tty} -r 19200 -d --foo\n"));
}

#[test]
fn run_waits_for_a_missing_port_instead_of_spinning() {
    let s = Scratch::new("noport");
    s.install();
    fs::write(
        s.app_dir().join("config"),
        "TTY=/dev/serial/by-id/no-such-adapter\nRETRY_DELAY=0\n",
    )
    .unwrap();
    let out = run_service(&s);
    assert!(!out.status.success());
    assert!(
        text(&out).starts_with("waiting for /dev/serial/by-id/no-such-adapter"),
        "{}",
        text(&out)
    );
}

#[test]
fn log_run_execs_multilog_with_venus_rotation() {
    let s = Scratch::new("log");
    s.install();
    let log_dir = s.root().join("service/dbus-modbus-client/log");
    let out = s
        .command(&log_dir.join("run"))
        .current_dir(&log_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        s.calls(),
        "multilog t s25000 n4 /var/log/dbus-modbus-client\n"
    );
}

#[test]
fn packaging_scripts_are_shellcheck_clean() {
    let scripts = [
        "install.sh",
        "uninstall.sh",
        "service/run",
        "service/log/run",
        "service/enable.sh",
        "scripts/build-armv7.sh",
        "scripts/smoke-armv7.sh",
        "scripts/ci-armv7.sh",
    ];
    let out = Command::new("shellcheck")
        .args(scripts)
        .current_dir(repo())
        .output()
        .expect("shellcheck not found: scripts/setup.sh installs it");
    assert!(out.status.success(), "{}", text(&out));
}
