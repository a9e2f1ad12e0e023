pragma Singleton

import QtQml

// Stub of gui-v2 src/units.h (the Units singleton), in the C locale.
QtObject {
	function formatNumber(number, precision = 0) {
		return Number(number).toFixed(precision)
	}

	// QLocale::toDouble: NaN unless the whole string is a number.
	function formattedNumberToReal(s: string): real {
		const trimmed = s.trim()
		return /^[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?$/.test(trimmed) ? Number(trimmed) : NaN
	}

	function defaultUnitString(unit: int): string {
		switch (unit) {
		case VenusOS.Units_Watt: return "W"
		case VenusOS.Units_Energy_KiloWattHour: return "kWh"
		default: return ""
		}
	}

	function defaultUnitDecimals(unit: int): int {
		return unit === VenusOS.Units_Energy_KiloWattHour ? 2 : 0
	}
}
