import QtQuick
import Victron.VenusOS
import "LimiterSettings.js" as LimiterSettings

// Settings → Integrations → UI Plugins → DynamicGeneration: the limiter's settings, each bound to
// its com.victronenergy.settings item, and its live status.
//
// The inverter's rated power is no setting: the daemon reads it from the inverter and falls back
// to its --rated-power command-line option, so it is shown read-only.
Page {
	id: root

	readonly property string settingsUid: BackendConnection.serviceUidForType("settings")
	readonly property LimiterServices services: LimiterServices {}
	readonly property bool ownLimiter: !modeItem.valid || modeItem.value === LimiterSettings.modeOwnLimiter

	VeQuickItem {
		id: modeItem
		uid: root.settingsUid + LimiterSettings.mode.path
	}

	GradientListView {
		anchors.fill: parent
		model: VisibleItemModel {
			ListText {
				objectName: "settingsMissing"
				text: qsTr("Settings not found")
				caption: qsTr("dbus-modbus-client creates them when it starts: check that its service runs.")
				preferredVisible: !modeItem.valid
			}

			ListRadioButtonGroup {
				objectName: "mode"
				text: qsTr("Mode")
				dataItem.uid: root.settingsUid + LimiterSettings.mode.path
				optionModel: [
					{ display: qsTr("Off (G100 export limit only)"), value: LimiterSettings.modeOff },
					{ display: qsTr("Own limiter"), value: LimiterSettings.modeOwnLimiter },
					{ display: qsTr("External control (/Ac/PowerLimit)"), value: LimiterSettings.modeExternal },
				]
			}

			ListSwitch {
				objectName: "derateGeneration"
				text: qsTr("Follow the house's demand")
				caption: qsTr("The inverter's output is limited so that the site neither imports nor exports.")
				dataItem.uid: root.settingsUid + LimiterSettings.derateGeneration.path
				writeAccessLevel: VenusOS.User_AccessType_User
				preferredVisible: root.ownLimiter
			}

			LimiterNumberField {
				id: energyDifference

				objectName: "energyDifference"
				text: qsTr("Target net consumption")
				caption: qsTr("The grid meter's import − export the limiter aims for; 0 leaves it unconfigured.")
				setting: LimiterSettings.energyDifference
				unit: VenusOS.Units_Energy_KiloWattHour
				writeAccessLevel: VenusOS.User_AccessType_User
				preferredVisible: root.ownLimiter
			}

			ListButton {
				id: useConsumption

				readonly property real consumption: consumptionItem.valid ? consumptionItem.value : NaN
				readonly property real rounded: Math.round(consumption)
				readonly property bool usable: !isNaN(rounded)
						&& rounded >= LimiterSettings.energyDifference.min
						&& rounded <= LimiterSettings.energyDifference.max

				objectName: "useConsumption"
				text: isNaN(consumption)
						? qsTr("Grid meter consumption: not found")
						: qsTr("Grid meter consumption: %1 %2")
							.arg(Units.formatNumber(consumption, 1))
							.arg(Units.defaultUnitString(VenusOS.Units_Energy_KiloWattHour))
				caption: !isNaN(consumption) && !usable
						? qsTr("Outside the target's range: it cannot be used.")
						: ""
				secondaryText: qsTr("Use current")
				interactive: usable && energyDifference.dataItem.valid
				writeAccessLevel: VenusOS.User_AccessType_User
				preferredVisible: root.ownLimiter
				onClicked: energyDifference.dataItem.setValue(rounded)

				VeQuickItem {
					id: consumptionItem
					uid: root.services.gridMeterPath(root.services.consumptionPath)
				}
			}

			LimiterNumberField {
				objectName: "exportLimit"
				text: qsTr("G100 export limit")
				caption: qsTr("Kept in every mode.")
				setting: LimiterSettings.exportLimit
				unit: VenusOS.Units_Watt
			}

			ListQuantity {
				objectName: "ratedPower"
				text: qsTr("Inverter rated power")
				caption: qsTr("Read from the inverter; when it cannot be, --rated-power in EXTRA_ARGS of /data/dbus-modbus-client/config is used.")
				dataItem.uid: root.services.pvInverterPath("/Ac/MaxPower")
				unit: VenusOS.Units_Watt
			}

			SettingsListHeader {
				text: qsTr("Status")
			}

			LimiterStatus {
				services: root.services
			}
		}
	}
}
