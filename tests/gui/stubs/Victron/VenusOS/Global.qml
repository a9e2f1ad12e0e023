pragma Singleton

import QtQuick
import VenusOSTest

// Stub of gui-v2 Global.qml: the access check (data/SystemSettings.qml canAccess), toasts, and a
// page manager that keeps the last pushed page so that a test can act on it.
QtObject {
	property var pageManager: QtObject {
		property var currentPage: null

		function pushPage(page, properties) {
			currentPage = page.createObject(null, properties ?? {})
			return currentPage
		}
	}

	property var systemSettings: QtObject {
		function canAccess(level: int): bool {
			return FakeBus.accessLevel >= level
		}
	}

	function showToastNotification(type, text, autoCloseInterval = 0) {
		FakeBus.toasts = FakeBus.toasts.concat([{ type: type, text: text }])
		return FakeBus.toasts.length
	}
}
