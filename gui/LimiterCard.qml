import QtQuick
import Victron.VenusOS

// The limiter's card in the Controls pane: its status and live values, read-only (the settings
// are on the plugin's settings page).
ControlCard {
	id: root

	readonly property LimiterServices services: LimiterServices {}

	implicitHeight: content.y + content.height + Theme.geometry_controlCard_contentMargins
	icon.source: "qrc:/images/solaryield.svg"
	title.text: qsTr("Generation limit")

	LimiterStatus {
		id: content

		anchors {
			top: root.title.bottom
			topMargin: Theme.geometry_controlCard_status_bottomMargin
		}
		services: root.services
		flat: true
	}
}
