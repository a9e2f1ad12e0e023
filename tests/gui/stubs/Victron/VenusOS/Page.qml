import QtQuick

// Stub of gui-v2 components/Page.qml.
FocusScope {
	property string title
	property color backgroundColor
	property bool fullScreenWhenIdle
	readonly property bool isCurrentPage: true
	property bool animationEnabled
	property int topLeftButton
	property int topRightButton
	property var tryPop

	implicitWidth: Theme.geometry_screen_width
	implicitHeight: Theme.geometry_screen_height
}
