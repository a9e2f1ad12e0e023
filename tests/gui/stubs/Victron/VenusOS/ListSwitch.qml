import QtQuick

// Stub of gui-v2 components/listitems/core/ListSwitch.qml, with its click(): a click writes
// valueFalse when checked and valueTrue when not, through dataItem.setValue().
ListSetting {
	id: root

	readonly property alias dataItem: dataItem
	readonly property bool defaultInteractive: (dataItem.uid === "" || dataItem.valid)
	property bool checked: invertSourceValue ? dataItem.value === valueFalse : dataItem.value === valueTrue
	property bool checkable
	property string secondaryText
	property bool updateDataOnClick: true
	property bool invertSourceValue
	property var valueTrue: 1
	property var valueFalse: 0

	signal clicked

	function click() {
		if (!root.checkWriteAccessLevel() || !root.clickable) {
			return
		}
		if (root.updateDataOnClick) {
			root.toggleDataValue()
		}
		root.clicked()
	}

	function toggleDataValue() {
		if (root.dataItem.uid.length > 0) {
			if (root.invertSourceValue) {
				root.dataItem.setValue(checked ? valueTrue : valueFalse)
			} else {
				root.dataItem.setValue(checked ? valueFalse : valueTrue)
			}
		}
	}

	interactive: defaultInteractive

	VeQuickItem {
		id: dataItem
	}
}
