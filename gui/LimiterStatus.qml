import QtQuick
import Victron.VenusOS

// The limiter's live values from dbus-modbus-client's PV inverter service: on the settings page
// and, with flat list items, on the Controls card.
SettingsColumn {
	id: root

	required property LimiterServices services
	property bool flat

	width: parent?.width ?? 0

	ListText {
		objectName: "status"
		text: qsTr("Limiter status")
		flat: root.flat
		dataItem.uid: root.services.pvInverterPath("/dynamicGenerationStatus")
		secondaryText: dataItem.valid ? dataItem.value : qsTr("PV inverter not found")
	}

	ListQuantity {
		objectName: "demand"
		text: qsTr("Demand")
		flat: root.flat
		dataItem.uid: root.services.pvInverterPath("/dynamicGenerationPower")
		unit: VenusOS.Units_Watt
	}

	ListQuantity {
		objectName: "appliedLimit"
		text: qsTr("Applied limit")
		flat: root.flat
		dataItem.uid: root.services.pvInverterPath("/dynamicGenerationMaxPower")
		unit: VenusOS.Units_Watt
	}

	ListQuantity {
		objectName: "pvPower"
		text: qsTr("PV power")
		flat: root.flat
		dataItem.uid: root.services.pvInverterPath("/Ac/Power")
		unit: VenusOS.Units_Watt
	}

	ListText {
		objectName: "limitWrites"
		text: qsTr("Limit writes")
		flat: root.flat
		dataItem.uid: root.services.pvInverterPath("/Internal/LimitWrites")
		secondaryText: dataItem.valid ? Units.formatNumber(dataItem.value, 0) : "--"
	}
}
