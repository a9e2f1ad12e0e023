import QtQuick

// ControlCard's icon: a QtQuick.Controls.impl ColorImage in gui-v2, whose images (qrc:/images/)
// are not here to load.
Item {
	property url source
	property color color
}
