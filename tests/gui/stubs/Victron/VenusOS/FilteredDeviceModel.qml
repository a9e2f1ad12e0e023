import QtQuick
import VenusOSTest

// Stub of gui-v2 src/filtereddevicemodel.h: the services of FakeBus whose type is in
// serviceTypes, in the order they appeared, filtered through childFilterFunction(device,
// childItems) for the types named in childFilterIds, each row's role "device" a Device.
ListModel {
	id: root

	property var serviceTypes: []
	property var childFilterIds: ({})
	property var childFilterFunction
	property int sorting
	readonly property Device firstObject: _rows.length > 0 ? _devices[_rows[0]] : null

	function deviceAt(index: int): Device {
		return index >= 0 && index < _rows.length ? _devices[_rows[index]] : null
	}

	function deviceForDeviceInstance(deviceInstance: int): Device {
		return null
	}

	dynamicRoles: true

	// Devices by serviceUid, made once each so that a device keeps its identity.
	property var _devices: ({})
	// The serviceUids in the model.
	property var _rows: []
	readonly property var _wanted: FakeBus.revision, _filter()

	function _filter() {
		const types = typeof serviceTypes === "string" ? [serviceTypes] : serviceTypes
		const rows = []
		for (const service of FakeBus.services) {
			if (types.indexOf(service.serviceType) < 0) {
				continue
			}
			if (!_devices[service.serviceUid]) {
				_devices[service.serviceUid] = deviceComponent.createObject(root, service)
			}
			const device = _devices[service.serviceUid]
			const childIds = childFilterIds[service.serviceType] ?? []
			if (childIds.length > 0 && typeof childFilterFunction === "function") {
				const childItems = {}
				for (const id of childIds) {
					const value = FakeBus.read(service.serviceUid + "/" + id)
					childItems[id] = value === undefined ? undefined : { id: id, value: value }
				}
				if (!childFilterFunction(device, childItems)) {
					continue
				}
			}
			rows.push(service.serviceUid)
		}
		return rows
	}

	on_WantedChanged: _update()
	Component.onCompleted: _update()

	function _update() {
		if (JSON.stringify(_wanted) === JSON.stringify(_rows)) {
			return
		}
		clear()
		for (const uid of _wanted) {
			append({ device: _devices[uid] })
		}
		_rows = _wanted
	}

	property Component deviceComponent: Component {
		Device {}
	}
}
