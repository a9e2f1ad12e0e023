import QtQuick
import Victron.VenusOS
import VenusOSTest
import "qrc:/DynamicGeneration/LimiterSettings.js" as LimiterSettings

// The plugin's pages, loaded from the plugin's own resource (qrc:/DynamicGeneration/, registered
// from the built JSON by check_plugin.py) against the gui-v2 stubs, driven the way a user drives
// them, with FakeBus as the D-Bus. Each test_ function gets a fresh bus and fresh pages; the
// results go to `report` (JSON) for check_plugin.py.
Item {
	id: harness

	// Set by check_plugin.py.
	required property url pageUrl
	required property url cardUrl
	// The daemon's AddSettings definitions, parsed from src/app/generation.rs:
	// [{ path, defaultValue (null when not a literal), min, max }].
	required property var daemonSettings

	property string report

	readonly property string settings: "dbus/com.victronenergy.settings"
	readonly property string ourInverter: "dbus/com.victronenergy.pvinverter.growatt_AB1234"
	readonly property string otherInverter: "dbus/com.victronenergy.pvinverter.fronius_1"
	readonly property string ourMeter: "dbus/com.victronenergy.grid.eastron_5678"
	readonly property string otherMeter: "dbus/com.victronenergy.grid.cg_ET340"

	property var _created: []

	// --- helpers -------------------------------------------------------------------------------

	function fail(message) {
		throw new Error(message)
	}

	function compare(actual, expected, what) {
		const a = JSON.stringify(actual)
		const e = JSON.stringify(expected)
		if (a !== e) {
			fail(what + ": got " + a + ", expected " + e)
		}
	}

	function verify(condition, what) {
		if (!condition) {
			fail(what)
		}
	}

	function create(url) {
		const component = Qt.createComponent(url)
		if (component.status !== Component.Ready) {
			fail("cannot load " + url + ": " + component.errorString())
		}
		const object = component.createObject(harness)
		if (!object) {
			fail("cannot create " + url + ": " + component.errorString())
		}
		_created.push(object)
		return object
	}

	// Depth-first through visual children, resources and ObjectModel contents.
	function find(root, name) {
		if (!root) {
			return null
		}
		if (root.objectName === name) {
			return root
		}
		const next = []
		if (root.data !== undefined) {
			for (let i = 0; i < root.data.length; ++i) {
				next.push(root.data[i])
			}
		}
		if (root.model && typeof root.model.get === "function" && root.model.count !== undefined) {
			for (let i = 0; i < root.model.count; ++i) {
				next.push(root.model.get(i))
			}
		}
		for (const child of next) {
			const found = find(child, name)
			if (found) {
				return found
			}
		}
		return null
	}

	function item(root, name) {
		const found = find(root, name)
		verify(found, "no item named " + name)
		return found
	}

	function setting(path) {
		return settings + path
	}

	// A GX with dbus-modbus-client running beside another PV inverter and another grid meter,
	// both listed first, so that taking the first service of a type would pick the wrong one.
	function publishSite() {
		FakeBus.publish(setting(LimiterSettings.mode.path), 1)
		FakeBus.publish(setting(LimiterSettings.derateGeneration.path), 0)
		FakeBus.publish(setting(LimiterSettings.energyDifference.path), 0)
		FakeBus.publish(setting(LimiterSettings.exportLimit.path), 3680)

		FakeBus.publish(otherInverter + "/Ac/Power", 999)
		FakeBus.addService(otherInverter)
		FakeBus.publish(ourInverter + "/dynamicGenerationStatus", "Configured, limiting")
		FakeBus.publish(ourInverter + "/dynamicGenerationPower", 1500)
		FakeBus.publish(ourInverter + "/dynamicGenerationMaxPower", 1480)
		FakeBus.publish(ourInverter + "/Ac/Power", 1432.5)
		FakeBus.publish(ourInverter + "/Ac/MaxPower", 3600)
		FakeBus.publish(ourInverter + "/Internal/LimitWrites", 17)
		FakeBus.addService(ourInverter)

		FakeBus.publish(otherMeter + "/Ac/Power", -40)
		FakeBus.addService(otherMeter)
		FakeBus.publish(ourMeter + "/Ac/Energy/Consumption", 1234.6)
		FakeBus.addService(ourMeter)
	}

	// Types `text` into a field and presses Enter: gui-v2's text field updates secondaryText as
	// the user types, then validates and saves.
	function typeInto(field, text) {
		field.secondaryText = text
		return field.runValidation(VenusOS.InputValidation_ValidateAndSave)
	}

	function writesTo(uid) {
		return FakeBus.writes.filter(w => w.uid === uid).map(w => w.value)
	}

	// --- tests ---------------------------------------------------------------------------------

	function test_settings_table_matches_the_daemon() {
		const page = LimiterSettings.all.map(s => ({ path: s.path, min: s.min, max: s.max }))
		const daemon = daemonSettings.map(s => ({ path: s.path, min: s.min, max: s.max }))
		const byPath = (a, b) => a.path < b.path ? -1 : 1
		compare(page.sort(byPath), daemon.sort(byPath), "settings and ranges (page vs src/app/generation.rs)")
		for (const d of daemonSettings) {
			if (d.defaultValue != null) {  // null: not a literal in the daemon's source
				const s = LimiterSettings.all.find(s => s.path === d.path)
				compare(s.defaultValue, d.defaultValue, "default of " + d.path)
			}
		}
	}

	function test_page_finds_our_services_by_type() {
		publishSite()
		const page = create(pageUrl)
		compare(item(page, "status").secondaryText, "Configured, limiting", "status")
		compare(item(page, "demand").value, 1500, "demand")
		compare(item(page, "appliedLimit").value, 1480, "applied limit")
		compare(item(page, "pvPower").value, 1432.5, "PV power")
		compare(item(page, "limitWrites").secondaryText, "17", "limit writes")
		compare(item(page, "ratedPower").value, 3600, "rated power")
		compare(item(page, "useConsumption").text, "Grid meter consumption: 1234.6 kWh", "consumption")
		verify(!item(page, "settingsMissing").effectiveVisible, "'settings not found' shown with settings")

		// Live: a new value on the bus shows at once.
		FakeBus.publish(ourInverter + "/dynamicGenerationStatus", "PV offline")
		compare(item(page, "status").secondaryText, "PV offline", "status after a change")
		compare(FakeBus.writes, [], "writes")
	}

	function test_page_without_the_daemon() {
		FakeBus.publish(otherInverter + "/Ac/Power", 999)
		FakeBus.addService(otherInverter)
		const page = create(pageUrl)
		compare(item(page, "status").secondaryText, "PV inverter not found", "status")
		verify(isNaN(item(page, "pvPower").value), "another inverter's power shown")
		verify(item(page, "settingsMissing").effectiveVisible, "'settings not found' hidden")
		const enable = item(page, "derateGeneration")
		verify(!enable.clickable, "switch clickable without its setting")
		enable.click()
		item(page, "useConsumption").click()
		compare(FakeBus.writes, [], "writes")
	}

	function test_enable_switch_writes_1_then_0() {
		publishSite()
		const page = create(pageUrl)
		const enable = item(page, "derateGeneration")
		verify(!enable.checked, "enabled before the first click")
		enable.click()
		verify(enable.checked, "not enabled after the first click")
		enable.click()
		verify(!enable.checked, "still enabled after the second click")
		compare(FakeBus.writes, [
			{ uid: setting("/Settings/DynamicGeneration/derateGeneration"), value: 1 },
			{ uid: setting("/Settings/DynamicGeneration/derateGeneration"), value: 0 },
		], "writes")
	}

	function test_out_of_range_values_typed_in_are_not_written() {
		publishSite()
		const page = create(pageUrl)
		const target = item(page, "energyDifference")
		const uid = setting("/Settings/DynamicGeneration/energyDifference")
		for (const text of ["1000001", "-1", "12.5", "abc", ""]) {
			compare(typeInto(target, text), VenusOS.InputValidation_Result_Error, "validation of '" + text + "'")
		}
		compare(writesTo(uid), [], "energyDifference writes after refused input")
		verify(FakeBus.toasts.length === 5 && FakeBus.toasts[0].text.indexOf("1000000") >= 0,
				"refusals not explained: " + JSON.stringify(FakeBus.toasts))
		compare(typeInto(target, "1000000"), VenusOS.InputValidation_Result_OK, "validation of the maximum")
		compare(typeInto(target, "250"), VenusOS.InputValidation_Result_OK, "validation of 250")
		compare(writesTo(uid), [1000000, 250], "energyDifference writes")

		const limit = item(page, "exportLimit")
		const limitUid = setting("/Settings/DynamicGeneration/ExportLimit")
		for (const text of ["100001", "-5", "3680.5"]) {
			typeInto(limit, text)
		}
		compare(writesTo(limitUid), [], "ExportLimit writes after refused input")
		typeInto(limit, "0")
		typeInto(limit, "3600")
		compare(writesTo(limitUid), [0, 3600], "ExportLimit writes")
		compare(FakeBus.writes.length, 4, "number of writes")
	}

	function test_use_current_writes_the_rounded_consumption() {
		publishSite()
		const page = create(pageUrl)
		const use = item(page, "useConsumption")
		verify(use.clickable, "'use current' not clickable")
		use.click()
		compare(FakeBus.writes, [{ uid: setting("/Settings/DynamicGeneration/energyDifference"), value: 1235 }], "writes")
		compare(item(page, "energyDifference").value, 1235, "target after 'use current'")

		// A net exporter's consumption is negative: outside the setting's range.
		FakeBus.publish(ourMeter + "/Ac/Energy/Consumption", -3.2)
		verify(!use.clickable, "'use current' clickable with a negative consumption")
		use.click()
		compare(FakeBus.writes.length, 1, "number of writes")
	}

	function test_mode_needs_installer_access_and_hides_the_own_limiter() {
		publishSite()
		const page = create(pageUrl)
		const mode = item(page, "mode")
		compare(mode.secondaryText, "Own limiter", "mode shown")

		FakeBus.accessLevel = VenusOS.User_AccessType_User
		mode.click()
		verify(Global.pageManager.currentPage === null, "options opened without installer access")
		compare(FakeBus.toasts.length, 1, "toasts")

		FakeBus.accessLevel = VenusOS.User_AccessType_Installer
		mode.click()
		const options = Global.pageManager.currentPage
		verify(options !== null, "options not opened")
		compare(options.optionModel.map(o => o.value), [0, 1, 2], "option values")
		options.optionClicked(2, options.optionModel[2].value)
		options.destroy()
		compare(FakeBus.writes, [{ uid: setting("/Settings/DynamicGeneration/Mode"), value: 2 }], "writes")
		compare(mode.secondaryText, "External control (/Ac/PowerLimit)", "mode shown after the change")
		for (const name of ["derateGeneration", "energyDifference", "useConsumption"]) {
			verify(!item(page, name).effectiveVisible, name + " shown outside the own limiter mode")
		}
		verify(item(page, "exportLimit").effectiveVisible, "export limit hidden")
	}

	function test_card_shows_the_live_status() {
		publishSite()
		const card = create(cardUrl)
		compare(card.title.text, "Generation limit", "title")
		compare(item(card, "status").secondaryText, "Configured, limiting", "status")
		compare(item(card, "demand").value, 1500, "demand")
		compare(item(card, "appliedLimit").value, 1480, "applied limit")
		compare(item(card, "pvPower").value, 1432.5, "PV power")
		compare(item(card, "limitWrites").secondaryText, "17", "limit writes")
		verify(item(card, "status").flat, "card list items not flat")
		FakeBus.publish(ourInverter + "/Internal/LimitWrites", 18)
		compare(item(card, "limitWrites").secondaryText, "18", "limit writes after a change")
		compare(FakeBus.writes, [], "writes")
	}

	// --- runner --------------------------------------------------------------------------------

	Component.onCompleted: {
		const results = []
		for (const name of Object.keys(harness).filter(k => k.startsWith("test_")).sort()) {
			FakeBus.reset()
			Global.pageManager.currentPage = null
			let error = ""
			try {
				harness[name]()
			} catch (e) {
				error = String(e.message || e)
			}
			for (const object of _created) {
				object.destroy()
			}
			_created = []
			results.push({ name: name, error: error })
		}
		report = JSON.stringify(results)
	}
}
