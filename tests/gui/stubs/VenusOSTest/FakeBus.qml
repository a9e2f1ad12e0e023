pragma Singleton

import QtQml

// Test support, not a gui-v2 type: the D-Bus that the stub VeQuickItem and FilteredDeviceModel
// read, and the record of every write the page makes. A plugin that used this type would fail
// qmllint against the stubs' Victron.VenusOS module, where it is not.
QtObject {
	id: root

	// uid → value, e.g. "dbus/com.victronenergy.settings/Settings/DynamicGeneration/Mode" → 1.
	property var values: ({})
	// Every setValue() in order: { uid, value }.
	property var writes: []
	// The services on the bus, in the order they appeared: { serviceUid, serviceType }.
	property var services: []
	// Toast notifications shown: { type, text }.
	property var toasts: []
	// The user's access level, as /Settings/System/AccessLevel: 0 user, 1 installer, 2 superuser.
	property int accessLevel: 1
	// Bumped on every change; the stubs re-read through bindings on it.
	property int revision

	function reset() {
		values = {}
		writes = []
		services = []
		toasts = []
		accessLevel = 1
		revision++
	}

	// A value published by its service (the daemon, localsettings): not a write by the page.
	function publish(uid: string, value: var) {
		values[uid] = value
		revision++
	}

	// A service appears: its type is the third part of its name, as in gui-v2.
	function addService(serviceUid: string) {
		const name = serviceUid.slice(serviceUid.indexOf("/") + 1)
		services = services.concat([{ serviceUid: serviceUid, serviceType: name.split(".")[2] }])
		revision++
	}

	function read(uid: string): var {
		return Object.prototype.hasOwnProperty.call(values, uid) ? values[uid] : undefined
	}

	// What VeQuickItem.setValue() does: localsettings takes the value if the item exists.
	function write(uid: string, value: var): int {
		writes = writes.concat([{ uid: uid, value: value }])
		if (read(uid) === undefined) {
			revision++
			return -1
		}
		values[uid] = value
		revision++
		return 0
	}
}
