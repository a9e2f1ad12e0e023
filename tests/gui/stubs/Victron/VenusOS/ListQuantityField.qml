import QtQuick

// Stub of gui-v2 components/listitems/core/ListQuantityField.qml.
ListTextField {
	id: root

	property real value: dataItem.valid ? dataItem.value : NaN
	property int unit: VenusOS.Units_None
	property int decimals: Units.defaultUnitDecimals(unit)

	suffix: Units.defaultUnitString(unit)
	inputMethodHints: Qt.ImhFormattedNumbersOnly
	secondaryText: Units.formatNumber(root.value, root.decimals)
	validateInput: function() {
		const numberValue = Units.formattedNumberToReal(secondaryText)
		if (isNaN(numberValue)) {
			return Utils.validationResult(VenusOS.InputValidation_Result_Error, "'%1' is not a number".arg(secondaryText))
		}
		return Utils.validationResult(VenusOS.InputValidation_Result_OK, "", Units.formatNumber(numberValue, root.decimals))
	}
	saveInput: function() {
		if (dataItem.uid) {
			dataItem.setValue(Units.formattedNumberToReal(secondaryText))
		}
	}
}
