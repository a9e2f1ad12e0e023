import QtQuick

// Stub of gui-v2 components/listitems/core/SettingsListHeader.qml (a Label).
Text {
	readonly property bool effectiveVisible: preferredVisible
	property bool preferredVisible: true
}
