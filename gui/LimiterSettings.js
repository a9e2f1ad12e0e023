.pragma library

// The limiter's settings in com.victronenergy.settings, as the daemon creates them with
// AddSettings (src/app/generation.rs): path, default and range. Each list item on the page is
// bound to one entry; scripts/test-gui.sh checks this table against the daemon's source, so a
// range changed there and not here fails the tests.
//
// To add a setting: an entry here (and in `all`), and a list item in PageLimiter.qml.

const prefix = "/Settings/DynamicGeneration/"

// 0 off (the G100 export limit only), 1 own limiter, 2 external control through /Ac/PowerLimit.
const mode = { path: prefix + "Mode", defaultValue: 1, min: 0, max: 2 }
const modeOff = 0
const modeOwnLimiter = 1
const modeExternal = 2

// 1: the own limiter follows the house's demand (mode 1 only).
const derateGeneration = { path: prefix + "derateGeneration", defaultValue: 0, min: 0, max: 1 }

// kWh: the grid meter's net consumption (import − export) the own limiter aims for; 0 = not
// configured.
const energyDifference = { path: prefix + "energyDifference", defaultValue: 0, min: 0, max: 1000000 }

// W: the G100 export limit, kept in every mode. Its default is the daemon's --export-limit.
const exportLimit = { path: prefix + "ExportLimit", defaultValue: 3680, min: 0, max: 100000 }

const all = [mode, derateGeneration, energyDifference, exportLimit]
