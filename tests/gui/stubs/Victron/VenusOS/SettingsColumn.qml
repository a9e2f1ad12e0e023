import QtQuick

// Stub of gui-v2 components/SettingsColumn.qml.
FocusScope {
	id: root

	property bool preferredVisible: true
	property bool effectiveVisible: preferredVisible
	property alias spacing: contentColumn.spacing
	property alias leftPadding: contentColumn.leftPadding
	property alias rightPadding: contentColumn.rightPadding
	property alias topPadding: contentColumn.topPadding
	property alias bottomPadding: contentColumn.bottomPadding
	default property alias _data: contentColumn.data

	implicitWidth: contentColumn.implicitWidth
	implicitHeight: contentColumn.implicitHeight
	visible: effectiveVisible

	Column {
		id: contentColumn
		width: parent.width
		height: parent.height
	}
}
