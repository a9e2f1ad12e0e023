import QtQuick

// Stub of gui-v2 components/listitems/core/ListTextField.qml. gui-v2's text field sets
// secondaryText as the user types; on Enter or focus loss it calls runValidation(
// InputValidation_ValidateAndSave), which runs validateInput() and, on OK or Warning, saveInput()
// (components/controls/TextValidationField.qml). A test types by setting secondaryText and
// presses Enter with runValidation().
ListSetting {
	id: root

	readonly property alias dataItem: dataItem
	property int inputMethodHints: Qt.ImhNone
	property string secondaryText: dataItem.valid ? dataItem.value : ""
	property string placeholderText
	property int echoMode: TextInput.Normal
	property int maximumLength: 32767
	property string suffix
	property var flickable
	property var validateInput
	property var saveInput: function() {
		if (dataItem.uid) {
			dataItem.setValue(secondaryText)
		}
	}
	property bool validateOnFocusLost: true

	function runValidation(mode: int): int {
		if (!validateInput) {
			if (mode === VenusOS.InputValidation_ValidateAndSave) {
				saveInput()
			}
			return VenusOS.InputValidation_Result_OK
		}
		const result = validateInput()
		if (mode === VenusOS.InputValidation_ValidateAndSave) {
			if (result.notificationText.length > 0) {
				Global.showToastNotification(result.status === VenusOS.InputValidation_Result_Error
						? VenusOS.Notification_Alarm : VenusOS.Notification_Info, result.notificationText, 5000)
			}
			if (result.status === VenusOS.InputValidation_Result_OK
					|| result.status === VenusOS.InputValidation_Result_Warning) {
				saveInput()
			}
		}
		return result.status
	}

	interactive: (dataItem.uid === "" || dataItem.valid)

	VeQuickItem {
		id: dataItem
	}
}
