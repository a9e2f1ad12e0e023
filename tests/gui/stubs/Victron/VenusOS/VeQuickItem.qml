import QtQml
import VenusOSTest

// Stub of veutil's VeQuickItem (inc/veutil/qt/ve_quick_item.hpp): a data item bound to one
// uid. It reads FakeBus, and setValue() (or an assignment to value, as in veutil) goes to
// FakeBus.write(), which records it.
QtObject {
	id: root

	property string uid
	property var value
	readonly property bool valid: value !== undefined
	property real min: NaN
	property real max: NaN
	readonly property var defaultValue: undefined
	property string text
	property int decimals
	property string unit
	property bool isSetting: true
	property bool invalidate: true

	function setValue(newValue: var): int {
		return FakeBus.write(root.uid, newValue)
	}

	function getValue(force: bool): var {
		return root.value
	}

	property bool _syncing
	readonly property var _busValue: FakeBus.revision, root.uid.length > 0 ? FakeBus.read(root.uid) : undefined
	on_BusValueChanged: _sync()
	Component.onCompleted: _sync()

	function _sync() {
		_syncing = true
		value = _busValue
		_syncing = false
	}

	onValueChanged: {
		if (!_syncing) {
			setValue(value)
		}
	}
}
