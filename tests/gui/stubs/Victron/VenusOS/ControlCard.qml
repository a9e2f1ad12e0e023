import QtQuick

// Stub of gui-v2 components/ControlCard.qml.
FocusScope {
	property alias icon: icon
	property alias title: title
	property alias status: status

	implicitWidth: Theme.geometry_controlCard_maximumWidth
	implicitHeight: Theme.geometry_controlCard_height

	StubColorImage {
		id: icon
	}

	Text {
		id: title
		anchors.left: icon.right
	}

	Text {
		id: status
		anchors.top: title.bottom
	}
}
