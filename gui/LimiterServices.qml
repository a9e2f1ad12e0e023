pragma ComponentBehavior: Bound

import QtQuick
import Victron.VenusOS

// Finds dbus-modbus-client's services the way gui-v2 finds devices: by service type through
// FilteredDeviceModel, never by a hard-coded name (the names carry the devices' serial numbers).
// A site may have other PV inverters and grid meters: ours are the ones that publish the paths
// only this daemon publishes.
QtObject {
	id: root

	// e.g. "dbus/com.victronenergy.pvinverter.growatt_AB12345678"; empty until found.
	readonly property string pvInverterUid: pvInverters.firstObject?.serviceUid ?? ""
	// e.g. "dbus/com.victronenergy.grid.eastron_12345"; empty until found.
	readonly property string gridMeterUid: {
		for (let i = 0; i < consumptionItems.count; ++i) {
			const item = consumptionItems.objectAt(i)
			if (item && item.valid) {
				return item.serviceUid
			}
		}
		return ""
	}

	// The grid meter's import − export (kWh): what energyDifference is compared with.
	readonly property string consumptionPath: "/Ac/Energy/Consumption"

	// The uid of a path on our PV inverter's service, or "" while the service is not found.
	function pvInverterPath(path: string): string {
		return pvInverterUid.length > 0 ? pvInverterUid + path : ""
	}

	function gridMeterPath(path: string): string {
		return gridMeterUid.length > 0 ? gridMeterUid + path : ""
	}

	readonly property FilteredDeviceModel pvInverters: FilteredDeviceModel {
		serviceTypes: ["pvinverter"]
		// Only dbus-modbus-client's pvinverter carries the limiter's status.
		childFilterIds: { "pvinverter": ["dynamicGenerationStatus"] }
		childFilterFunction: (device, childItems) => childItems["dynamicGenerationStatus"]?.value !== undefined
	}

	// /Ac/Energy/Consumption is not a direct child of the service, which is all childFilterIds can
	// look at: one data item per grid meter, and the first that has the path wins.
	readonly property FilteredDeviceModel gridMeters: FilteredDeviceModel {
		serviceTypes: ["grid"]
	}

	readonly property Instantiator consumptionItems: Instantiator {
		model: root.gridMeters
		delegate: VeQuickItem {
			required property Device device
			readonly property string serviceUid: device.serviceUid
			uid: device.serviceUid + root.consumptionPath
		}
	}
}
