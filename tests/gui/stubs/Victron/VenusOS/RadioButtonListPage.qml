import QtQuick

// Stub of gui-v2 components/RadioButtonListPage.qml: a test picks an option by emitting
// optionClicked(index, value), as the page does when the user taps one.
Page {
	property var optionModel: []
	property int currentIndex
	property bool updateCurrentIndexOnClick
	property var popDestination
	property int showAccessLevel
	property int writeAccessLevel
	property var validatePassword
	property Component header
	property Component footer

	signal optionClicked(index: int, value: var)
	signal aboutToPop()
}
