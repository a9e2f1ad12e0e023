import QtQuick

// Stub of gui-v2 components/listitems/core/ListItem.qml with the properties of its base,
// AbstractListItem (src/abstractlistitem.h).
FocusScope {
	property bool preferredVisible: true
	property bool effectiveVisible: preferredVisible
	property int textFormat: Text.AutoText
	property bool flat
	property bool hasSubMenu

	width: parent?.width ?? Theme.geometry_listItem_width
	implicitHeight: effectiveVisible ? 40 : 0
	visible: effectiveVisible
}
