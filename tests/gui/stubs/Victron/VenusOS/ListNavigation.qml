import QtQuick

// Stub of gui-v2 components/listitems/core/ListNavigation.qml, with its click().
ListSetting {
	id: root

	property string secondaryText
	property color secondaryTextColor
	property string iconSource
	property color iconColor

	signal clicked

	function click() {
		if (interactive) {
			clicked()
		}
	}

	interactive: true
	hasSubMenu: interactive
}
