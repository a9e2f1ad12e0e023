pragma Singleton

import QtQml

// Stub of gui-v2's Theme singleton: the geometry the plugin's card uses.
QtObject {
	readonly property real geometry_controlCard_contentMargins: 24
	readonly property real geometry_controlCard_status_bottomMargin: 8
	readonly property real geometry_controlCard_maximumWidth: 400
	readonly property real geometry_controlCard_height: 400
	readonly property real geometry_listItem_width: 600
	readonly property real geometry_screen_width: 800
	readonly property real geometry_screen_height: 480
}
