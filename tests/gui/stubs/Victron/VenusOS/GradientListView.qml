import QtQuick

// Stub of gui-v2 components/GradientListView.qml (a BaseListView, itself a ListView).
ListView {
}
