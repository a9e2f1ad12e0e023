import QtQml.Models

// Stub of gui-v2 src/visibleitemmodel.h: gui-v2's model leaves out the items whose
// effectiveVisible is false; this one holds them all, and the tests read effectiveVisible.
ObjectModel {
}
