#!/usr/bin/python3
"""Checks the built gui-v2 plugin the way gui-v2 loads it, then runs tst_plugin.qml.

    QT_QPA_PLATFORM=offscreen tests/gui/check_plugin.py target/gui/DynamicGeneration.json

1. The JSON: the keys and types gui-v2's GuiPluginLoader::populatePlugins() reads (see
   NOTEBOOK.md, 2026-12-06), one settings-page integration (type 1) and one Controls card
   (type 5, cardType 1), each url inside the plugin's own qrc:/<name>/ prefix.
2. The resource: base64 of an rcc binary that QResource registers, as gui-v2 does; its files are
   exactly gui/*.qml and gui/*.js, byte for byte, compressed with zlib or not at all (never zstd,
   which the GX's Qt need not read).
3. tst_plugin.qml in a QML engine with tests/gui/stubs on the import path, loading the pages from
   that resource.

Prints one line per check and test, then "N passed, N failed"; exits non-zero on any failure.
"""

import base64
import json
import re
import sys
from pathlib import Path

from PyQt6.QtCore import QDir, QFile, QIODevice, QResource, QUrl
from PyQt6.QtGui import QGuiApplication
from PyQt6.QtQml import QQmlComponent, QQmlEngine

REPO = Path(__file__).resolve().parents[2]
NAME = "DynamicGeneration"
SETTINGS_PAGE = 1  # GuiPluginLoader::PluginSettingsPage
QUICK_ACCESS_PANE_CARD = 5  # GuiPluginLoader::QuickAccessPaneCard
CONTROLS_CARD = 1  # GuiPluginLoader::ControlsCard

passed = 0
failed = 0


def result(name, error):
    global passed, failed
    if error:
        failed += 1
        print(f"FAIL {name}: {error}")
    else:
        passed += 1
        print(f"ok   {name}")


def check(name, condition, error):
    result(name, "" if condition else error)
    return condition


def daemon_settings():
    """The AddSettings definitions of src/app/generation.rs: path, literal default, range."""
    source = (REPO / "src/app/generation.rs").read_text()
    paths = dict(re.findall(r'pub(?:\([\w:]+\))? const (\w+): &str = "(/Settings/[^"]+)";', source))
    defs = []
    for const, default, low, high in re.findall(
        r"SettingDef::new\((\w+),\s*(.*?)\)\s*\.range\(\s*([-\d_]+)\s*,\s*([-\d_]+)\s*\)", source, re.S
    ):
        literal = re.fullmatch(r"-?[\d_]+", default.strip())
        defs.append(
            {
                "path": paths[const],
                "defaultValue": int(default.replace("_", "")) if literal else None,
                "min": int(low.replace("_", "")),
                "max": int(high.replace("_", "")),
            }
        )
    return defs


def read_resource(path):
    f = QFile(path)
    if not f.open(QIODevice.OpenModeFlag.ReadOnly):
        return None
    return bytes(f.readAll())


def check_json(plugin_path):
    """Returns (plugin dict, decoded resource) or (None, None)."""
    try:
        plugin = json.loads(Path(plugin_path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        result("json: well-formed", str(e))
        return None, None
    result("json: well-formed", "")
    want = {
        "name": str,
        "version": str,
        "minRequiredVersion": str,
        "maxRequiredVersion": str,
        "translations": list,
        "integrations": list,
        "resource": str,
    }
    wrong = [k for k, t in want.items() if not isinstance(plugin.get(k), t)]
    extra = sorted(set(plugin) - set(want))
    if not check("json: keys and types", not wrong and not extra, f"wrong or missing {wrong}, unknown {extra}"):
        return None, None
    check("json: name", plugin["name"] == NAME, f"name {plugin['name']!r}")
    check("json: version", plugin["version"] != "", "empty version")
    check(
        "json: minRequiredVersion",
        re.fullmatch(r"v\d+\.\d+\.\d+", plugin["minRequiredVersion"]) is not None,
        f"{plugin['minRequiredVersion']!r}",
    )
    try:
        resource = base64.b64decode(plugin["resource"], validate=True)
    except ValueError as e:
        result("json: resource is base64", str(e))
        return None, None
    check("json: resource is an rcc binary", resource[:4] == b"qres", f"starts with {resource[:4]!r}")
    return plugin, resource


def check_resource(plugin, resource):
    """Registers the resource like gui-v2 and compares it with gui/. Returns the page urls."""
    if not QResource.registerResourceData(resource):
        result("resource: registers", "QResource refused the data")
        return None
    result("resource: registers", "")
    root = f":/{NAME}"
    listed = sorted(QDir(root).entryList(QDir.Filter.Files))
    sources = sorted(p.name for p in (REPO / "gui").iterdir() if p.suffix in (".qml", ".js"))
    check("resource: files are gui/*.qml and gui/*.js", listed == sources, f"{listed} vs {sources}")
    differ = [n for n in sources if read_resource(f"{root}/{n}") != (REPO / "gui" / n).read_bytes()]
    check("resource: files equal their sources", not differ, f"differ: {differ}")
    zstd = [n for n in listed if QResource(f"{root}/{n}").compressionAlgorithm() == QResource.Compression.ZstdCompression]
    check("resource: no zstd compression", not zstd, f"zstd: {zstd}")

    integrations = plugin["integrations"]
    pages = [i for i in integrations if i.get("type") == SETTINGS_PAGE]
    cards = [i for i in integrations if i.get("type") == QUICK_ACCESS_PANE_CARD]
    check(
        "integrations: one settings page, one Controls card",
        len(pages) == 1 and len(cards) == 1 and len(integrations) == 2 and cards[0].get("cardType") == CONTROLS_CARD,
        json.dumps(integrations),
    )
    urls = [i.get("url", "") for i in integrations]
    bad = [u for u in urls if not u.startswith(f"qrc:/{NAME}/") or not QFile(":" + u[len("qrc:") :]).exists()]
    check("integrations: urls resolve inside the resource", not bad, f"unresolved {bad}")
    if not pages or not cards or bad:
        return None
    return pages[0]["url"], cards[0]["url"]


def run_qml_tests(page_url, card_url):
    engine = QQmlEngine()
    engine.addImportPath(str(REPO / "tests/gui/stubs"))
    warnings = []
    engine.warnings.connect(lambda ws: warnings.extend(w.toString() for w in ws))
    component = QQmlComponent(engine, QUrl.fromLocalFile(str(REPO / "tests/gui/tst_plugin.qml")))
    harness = component.createWithInitialProperties(
        {"pageUrl": QUrl(page_url), "cardUrl": QUrl(card_url), "daemonSettings": daemon_settings()}
    )
    if harness is None:
        result("qml: tst_plugin.qml loads", "; ".join(e.toString() for e in component.errors()))
        return
    report = json.loads(harness.property("report") or "[]")
    if not check("qml: tests ran", len(report) > 0, "no test_ function ran"):
        return
    for test in report:
        result("qml: " + test["name"], test["error"])
    # A binding error or a missing type in the pages shows as a QML warning, not as a failure.
    check("qml: no QML warnings", not warnings, "\n".join(warnings))


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    app = QGuiApplication(sys.argv[:1])  # noqa: F841 (QML needs the application object)
    plugin, resource = check_json(sys.argv[1])
    if plugin is not None:
        urls = check_resource(plugin, resource)
        if urls is not None:
            run_qml_tests(*urls)
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
