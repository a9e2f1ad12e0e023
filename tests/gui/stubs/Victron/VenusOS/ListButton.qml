import QtQuick

// Stub of gui-v2 components/listitems/core/ListButton.qml, with its click().
ListSetting {
	id: root

	property string secondaryText
	property int secondaryFontSize
	property color buttonBorderColor
	property color buttonBackgroundColor
	property bool readOnly: false

	signal clicked

	function click() {
		if (readOnly || !root.checkWriteAccessLevel() || !root.clickable) {
			return
		}
		root.clicked()
	}

	interactive: true
}
