//! install.sh / uninstall.sh / service scripts, run for real against a fake root (ROOT=...).
//!
//! Each test builds its own fake GX tree (/data and /service present, as on Venus OS), runs the
//! shell scripts as subprocesses, and compares full listings (type, mode, content or link target).
//! `svc`, `svstat` and `multilog` are replaced through PATH by recorders, so a call that must not
//! happen under ROOT is caught, and the one that must (the GUI restart after a plugin change,
//! `svc -t $ROOT/service/start-gui`) is seen.
//!
//! The gui-v2 plugin tests give the tree a Venus OS version (/opt/victronenergy/version) and a
//! `start-gui` service, as on a GX with a display, and install a stand-in plugin file.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

const BOOT_LINE: &str = "/data/dbus-modbus-client/enable.sh";
const FAKE_BINARY: &str = "#!/bin/sh\necho \"args: $*\"\n";
const FAKE_PLUGIN: &str = "{ \"name\": \"DynamicGeneration\", \"version\": \"1\" }\n";
const PLUGIN_APP: &str = "data/apps/available/DynamicGeneration";
const PLUGIN_JSON: &str = "data/apps/available/DynamicGeneration/gui-v2/DynamicGeneration.json";
const PLUGIN_LINK: &str = "data/apps/enabled/DynamicGeneration";

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
        write_mode(&dir.join("DynamicGeneration.json"), FAKE_PLUGIN, 0o600);
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

    /// A GX running `version` of Venus OS (None: no version file) with the GUI's service.
    fn venus(&self, version: Option<&str>) {
        let file = self.root().join("opt/victronenergy/version");
        match version {
            Some(v) => {
                fs::create_dir_all(file.parent().unwrap()).unwrap();
                // The second line is the build time, as on the GX.
                fs::write(&file, format!("{v}\n20261201093000\n")).unwrap();
            }
            None => {
                let _ = fs::remove_file(&file);
            }
        }
        fs::create_dir_all(self.root().join("service/start-gui")).unwrap();
    }

    /// The recorded call that restarts the GUI.
    fn gui_restart(&self) -> String {
        format!("svc -t {}/service/start-gui\n", self.root().display())
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
            .env("GUI_PLUGIN", self.dir.join("DynamicGeneration.json"))
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
        "scripts/build-gui.sh",
        "scripts/test-gui.sh",
        "scripts/setup.sh",
        "scripts/lib/apt.sh",
    ];
    // -x: the scripts source scripts/lib/apt.sh.
    let out = Command::new("shellcheck")
        .arg("-x")
        .args(scripts)
        .current_dir(repo())
        .output()
        .expect("shellcheck not found: scripts/setup.sh installs it");
    assert!(out.status.success(), "{}", text(&out));
}

// --- the gui-v2 plugin -------------------------------------------------------------------------

/// The lines of install.sh's output about the plugin.
fn plugin_lines(out: &Output) -> Vec<String> {
    text(out)
        .lines()
        .filter(|l| l.starts_with("GUI plugin"))
        .map(String::from)
        .collect()
}

#[test]
fn gui_plugin_is_installed_and_enabled_where_gui_v2_loads_plugins() {
    for version in ["v3.80", "v3.80-large-12", "v3.81~2", "v3.90", "v4.00~1"] {
        let s = Scratch::new("plugin");
        s.venus(Some(version));
        let out = s.install();
        let root = s.root();

        assert_eq!(
            fs::read_to_string(root.join(PLUGIN_JSON)).unwrap(),
            FAKE_PLUGIN,
            "{version}"
        );
        assert_eq!(mode(&root.join(PLUGIN_JSON)), 0o644);
        for dir in [PLUGIN_APP, &format!("{PLUGIN_APP}/gui-v2")] {
            assert_eq!(mode(&root.join(dir)), 0o755, "mode of {dir}");
        }
        assert_eq!(
            fs::read_link(root.join(PLUGIN_LINK)).unwrap(),
            root.join(PLUGIN_APP),
            "{version}"
        );
        assert_eq!(
            plugin_lines(&out),
            ["GUI plugin installed: Settings -> Integrations -> UI Plugins -> DynamicGeneration"],
            "{version}"
        );
        // The GUI reads its plugins when it starts: one restart, nothing else driven.
        assert_eq!(s.calls(), s.gui_restart(), "{version}");
    }
}

#[test]
fn second_install_with_the_plugin_changes_nothing_and_leaves_the_gui_alone() {
    let s = Scratch::new("plugin-again");
    s.venus(Some("v3.80"));
    s.install();
    let first = snapshot(&s.root());
    let out = s.install();
    assert_eq!(snapshot(&s.root()), first);
    for word in ["installed /", "enabled ", "restarted", "removed"] {
        assert!(
            !text(&out).contains(word),
            "second run said {word:?}: {}",
            text(&out)
        );
    }
    assert_eq!(s.calls(), s.gui_restart(), "the GUI restarted again");
}

#[test]
fn gui_plugin_is_skipped_with_one_line_where_gui_v2_has_no_plugins() {
    for version in [
        None,
        Some("v3.70"),
        Some("v3.70~45"),
        Some("v3.80~12"),
        Some("v3.80~3-large-2"),
        Some("v2.90"),
        Some("not a version"),
    ] {
        let s = Scratch::new("plugin-skip");
        s.venus(version);
        let out = s.install();
        assert!(!s.root().join("data/apps").exists(), "{version:?}");
        let lines = plugin_lines(&out);
        assert_eq!(lines.len(), 1, "{version:?}: {}", text(&out));
        assert!(
            lines[0].starts_with("GUI plugin: not installed: Venus OS ")
                && lines[0].contains("v3.80 and later"),
            "{version:?}: {}",
            lines[0]
        );
        assert_eq!(s.calls(), "", "{version:?}");
    }
}

#[test]
fn gui_plugin_is_skipped_when_the_release_has_none() {
    let s = Scratch::new("plugin-none");
    s.venus(Some("v3.80"));
    fs::remove_file(s.dir.join("DynamicGeneration.json")).unwrap();
    let out = s.install();
    assert!(!s.root().join("data/apps").exists());
    let lines = plugin_lines(&out);
    assert_eq!(lines.len(), 1, "{}", text(&out));
    assert!(lines[0].contains("scripts/build-gui.sh"), "{}", lines[0]);
    assert_eq!(s.calls(), "");
}

#[test]
fn upgraded_plugin_is_replaced_and_the_gui_restarted() {
    let s = Scratch::new("plugin-upgrade");
    s.venus(Some("v3.80"));
    s.install();
    let new_plugin = "{ \"name\": \"DynamicGeneration\", \"version\": \"2\" }\n";
    fs::write(s.dir.join("DynamicGeneration.json"), new_plugin).unwrap();
    let out = s.install();
    assert!(text(&out).contains("installed /"), "{}", text(&out));
    assert_eq!(
        fs::read_to_string(s.root().join(PLUGIN_JSON)).unwrap(),
        new_plugin
    );
    assert_eq!(s.calls(), s.gui_restart().repeat(2));
}

#[test]
fn a_missing_plugin_link_is_made_again() {
    let s = Scratch::new("plugin-link");
    s.venus(Some("v3.80"));
    s.install();
    fs::remove_file(s.root().join(PLUGIN_LINK)).unwrap();
    let out = s.install();
    assert!(text(&out).contains("enabled /"), "{}", text(&out));
    assert_eq!(
        fs::read_link(s.root().join(PLUGIN_LINK)).unwrap(),
        s.root().join(PLUGIN_APP)
    );
    assert_eq!(s.calls(), s.gui_restart().repeat(2));
}

#[test]
fn install_refuses_a_directory_where_the_plugin_link_goes() {
    let s = Scratch::new("plugin-dir");
    s.venus(Some("v3.80"));
    fs::create_dir_all(s.root().join(PLUGIN_LINK)).unwrap();
    fs::write(s.root().join(PLUGIN_LINK).join("keep"), "user's").unwrap();
    let out = s.command(&repo().join("install.sh")).output().unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("is not a link"), "{}", text(&out));
    assert_eq!(
        fs::read_to_string(s.root().join(PLUGIN_LINK).join("keep")).unwrap(),
        "user's"
    );
}

#[test]
fn gui_plugin_is_removed_after_a_downgrade_below_v3_80() {
    let s = Scratch::new("plugin-downgrade");
    s.venus(Some("v3.80"));
    s.install();
    s.venus(Some("v3.70"));
    let out = s.install();
    assert!(!s.root().join(PLUGIN_APP).exists());
    assert!(fs::symlink_metadata(s.root().join(PLUGIN_LINK)).is_err());
    let lines = plugin_lines(&out);
    assert_eq!(lines.len(), 1, "{}", text(&out));
    assert!(
        lines[0].starts_with("GUI plugin: removed: Venus OS v3.70"),
        "{}",
        lines[0]
    );
    assert_eq!(s.calls(), s.gui_restart().repeat(2));

    // And then nothing more to do.
    s.install();
    assert_eq!(s.calls(), s.gui_restart().repeat(2));
}

#[test]
fn uninstall_removes_the_plugin_and_restarts_the_gui() {
    // Another app in /data/apps, as Venus OS keeps them: untouched, and the tree as it was.
    let s = Scratch::new("plugin-uninstall");
    s.venus(Some("v3.80"));
    let other = s.root().join("data/apps/available/other-app/gui-v2");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("other-app.json"), "{}\n").unwrap();
    fs::create_dir_all(s.root().join("data/apps/enabled")).unwrap();
    std::os::unix::fs::symlink(
        s.root().join("data/apps/available/other-app"),
        s.root().join("data/apps/enabled/other-app"),
    )
    .unwrap();
    let before = snapshot(&s.root());

    s.install();
    assert!(s.root().join(PLUGIN_JSON).exists());
    let out = s.uninstall();
    assert_eq!(snapshot(&s.root()), before, "{}", text(&out));
    assert_eq!(s.calls(), s.gui_restart().repeat(2));

    // Without other apps, the shared directories stay, empty.
    let s = Scratch::new("plugin-uninstall-alone");
    s.venus(Some("v3.80"));
    s.install();
    s.uninstall();
    for dir in ["data/apps/available", "data/apps/enabled"] {
        assert_eq!(
            fs::read_dir(s.root().join(dir)).unwrap().count(),
            0,
            "{dir}"
        );
    }
    assert!(!s.app_dir().exists());
}
