.pragma library

// Stub of gui-v2 components/Utils.js: the one function the plugin uses.
function validationResult(status, notificationText = "", adjustedText = undefined) {
	return { status: status, notificationText: notificationText, adjustedText: adjustedText }
}
