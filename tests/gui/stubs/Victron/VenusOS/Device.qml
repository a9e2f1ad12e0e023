import QtQml

// Stub of gui-v2 src/basedevice.h / src/device.h: one service on the bus.
QtObject {
	property string serviceUid
	property string serviceType
	property int deviceInstance: -1
	property int productId
	property string productName
	property string customName
	property string name: customName || productName
	readonly property bool valid: serviceUid.length > 0
}
