import QtQuick

// Stub of gui-v2 components/listitems/core/ListQuantity.qml.
ListSetting {
	readonly property alias dataItem: dataItem
	property real value: dataItem.valid ? dataItem.value : NaN
	property color valueColor
	property int unit: VenusOS.Units_None
	property color unitColor
	property int decimals: -1
	property int formatHints

	VeQuickItem {
		id: dataItem
	}
}
