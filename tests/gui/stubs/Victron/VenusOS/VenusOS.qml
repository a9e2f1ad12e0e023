pragma Singleton

import QtQml

// Stub of gui-v2 src/enums.h (the VenusOS singleton): the enums the plugin uses, with gui-v2's
// names and values.
QtObject {
	enum User_AccessType {
		User_AccessType_User,
		User_AccessType_Installer,
		User_AccessType_SuperUser,
		User_AccessType_Service
	}

	enum Notification_Type {
		Notification_Warning,
		Notification_Alarm,
		Notification_Info
	}

	enum InputValidation_Result {
		InputValidation_Result_Unknown,
		InputValidation_Result_OK,
		InputValidation_Result_Warning,
		InputValidation_Result_Error
	}

	enum InputValidation_ValidateMode {
		InputValidation_ValidateOnly,
		InputValidation_ValidateAndSave
	}

	enum Units_Type {
		Units_None = 0,
		Units_Energy_KiloWattHour = 7,
		Units_Watt = 42
	}
}
