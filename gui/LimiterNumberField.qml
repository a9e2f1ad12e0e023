import QtQuick
import Victron.VenusOS

// A typed-in number for one entry of LimiterSettings.js. The settings are integers: input that is
// not a whole number, or lies outside the daemon's AddSettings range, is refused with a
// notification and never written.
ListQuantityField {
	id: root

	// An entry of LimiterSettings.js.
	required property var setting

	// The typed-in number, or NaN when it may not be written.
	function acceptedNumber(): real {
		const number = Units.formattedNumberToReal(secondaryText)
		if (isNaN(number) || number !== Math.floor(number)
				|| number < setting.min || number > setting.max) {
			return NaN
		}
		return number
	}

	dataItem.uid: BackendConnection.serviceUidForType("settings") + setting.path
	decimals: 0
	validateInput: function() {
		if (isNaN(acceptedNumber())) {
			return Utils.validationResult(VenusOS.InputValidation_Result_Error,
					qsTr("Enter a whole number from %1 to %2 %3.")
						.arg(Units.formatNumber(setting.min, 0))
						.arg(Units.formatNumber(setting.max, 0))
						.arg(Units.defaultUnitString(unit)))
		}
		return Utils.validationResult(VenusOS.InputValidation_Result_OK, "",
				Units.formatNumber(acceptedNumber(), 0))
	}
	saveInput: function() {
		const number = acceptedNumber()
		if (!isNaN(number)) {
			dataItem.setValue(number)
		}
	}
}
