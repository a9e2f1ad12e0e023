import QtQuick

// Stub of gui-v2 components/listitems/core/ListSetting.qml: text, caption and the access
// check. checkWriteAccessLevel() shows gui-v2's "Setting locked" toast when access is lacking.
ListItem {
	id: root

	property string text
	property string caption
	property int showAccessLevel: VenusOS.User_AccessType_User
	property int writeAccessLevel: VenusOS.User_AccessType_Installer
	readonly property bool userHasWriteAccess: Global.systemSettings.canAccess(writeAccessLevel)
	readonly property bool userHasReadAccess: Global.systemSettings.canAccess(showAccessLevel)
	property bool interactive
	readonly property bool clickable: enabled && interactive && userHasWriteAccess
	property color indicatorColor
	property int toast

	function checkWriteAccessLevel(): bool {
		if (root.userHasWriteAccess) {
			return true
		}
		root.toast = Global.showToastNotification(VenusOS.Notification_Info, "Setting locked for access level")
		return false
	}

	effectiveVisible: preferredVisible && userHasReadAccess
}
