import QtQuick

// Stub of gui-v2 components/listitems/core/ListRadioButtonGroup.qml: a click pushes the options
// page (kept as Global.pageManager.currentPage); choosing an option writes its value.
ListNavigation {
	id: root

	readonly property alias dataItem: dataItem
	property var optionModel: []
	property int currentIndex: {
		if (!optionModel || optionModel.length === undefined || dataItem.uid.length === 0 || !dataItem.valid) {
			return defaultIndex
		}
		for (let i = 0; i < optionModel.length; ++i) {
			if (optionModel[i].value === dataItem.value) {
				return i
			}
		}
		return defaultIndex
	}
	readonly property var currentValue: currentIndex >= 0 && currentIndex < optionModel.length
			? optionModel[currentIndex].value
			: undefined
	property bool updateCurrentIndexOnClick: true
	property bool updateDataOnClick: true
	property var popDestination: null
	property var validatePassword
	property int defaultIndex: -1
	property string defaultSecondaryText: "Unknown"
	property Component optionHeader
	property Component optionFooter

	signal optionClicked(index: int)
	signal aboutToPop()

	secondaryText: currentIndex >= 0 && currentIndex < optionModel.length
			? optionModel[currentIndex].display
			: defaultSecondaryText
	interactive: (dataItem.uid === "" || dataItem.valid)

	onClicked: {
		if (root.checkWriteAccessLevel()) {
			Global.pageManager.pushPage(optionsPageComponent, { title: root.text })
		}
	}

	VeQuickItem {
		id: dataItem
	}

	Component {
		id: optionsPageComponent

		RadioButtonListPage {
			optionModel: root.optionModel
			currentIndex: root.currentIndex
			showAccessLevel: root.showAccessLevel
			writeAccessLevel: root.writeAccessLevel

			onOptionClicked: (index, value) => {
				if (root.updateDataOnClick && dataItem.uid.length > 0) {
					dataItem.setValue(value)
				}
				root.optionClicked(index)
			}
		}
	}
}
