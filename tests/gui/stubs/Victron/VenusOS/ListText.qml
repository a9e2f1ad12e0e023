import QtQuick

// Stub of gui-v2 components/listitems/core/ListText.qml.
ListSetting {
	readonly property alias dataItem: dataItem
	property string secondaryText: dataItem.valid ? dataItem.value : ""
	property color secondaryTextColor

	VeQuickItem {
		id: dataItem
	}
}
