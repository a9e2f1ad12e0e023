pragma Singleton

import QtQml

// Stub of gui-v2 src/backendconnection.h: a D-Bus backend, as on the GX's own display.
QtObject {
	function uidPrefix(): string {
		return "dbus"
	}

	function serviceUidForType(serviceType: string): string {
		return uidPrefix() + "/com.victronenergy." + serviceType
	}
}
