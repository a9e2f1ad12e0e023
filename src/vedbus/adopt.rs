//! Taking over a device's settings from the driver it replaces: the Python original kept them
//! under `/Settings/Devices/cg_<serial>` and `pv_<serial>` (docs/reference/victron.md §4). On the
//! first start the daemon carries their VRM instance, name and position over into its own entry
//! and removes the old one, so that nothing is claimed twice (NOTEBOOK.md, 2026-12-06).

use std::collections::BTreeMap;

use super::settings::{Settings, parse_class_instance};
use super::{Error, Value};

/// The group every device entry lives in.
pub(super) const DEVICES: &str = "/Settings/Devices";

/// What an old entry held, to be written into the daemon's own entry.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Adopted {
    /// The old ident (`cg_21034567`).
    pub from: String,
    /// `ClassAndVrmInstance`, e.g. `grid:40`.
    pub class_instance: Option<String>,
    pub custom_name: Option<String>,
    pub position: Option<i32>,
}

impl Adopted {
    /// For the log: what was carried over.
    pub(super) fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(ci) = &self.class_instance {
            parts.push(format!("ClassAndVrmInstance {ci}"));
        }
        if let Some(name) = &self.custom_name {
            parts.push(format!("CustomName {name:?}"));
        }
        if let Some(p) = self.position {
            parts.push(format!("Position {p}"));
        }
        if parts.is_empty() {
            "nothing to carry over".to_string()
        } else {
            parts.join(", ")
        }
    }
}

/// Decides from the settings below [`DEVICES`] (keys relative to it): when the old entry `old`
/// exists and the daemon's own entry `new` does not (no `ClassAndVrmInstance` of its own), what
/// to carry over and which old settings to remove (every leaf below `old`, relative to
/// [`DEVICES`]: RemoveSettings takes leaves, a group path is refused). Values of the wrong shape
/// are left behind (removed, not carried).
pub(super) fn plan(
    devices: &BTreeMap<String, Value>,
    old: &str,
    new: &str,
) -> Option<(Adopted, Vec<String>)> {
    if old == new || devices.contains_key(&format!("{new}/ClassAndVrmInstance")) {
        return None;
    }
    let prefix = format!("{old}/");
    let leaves: Vec<String> = devices
        .keys()
        .filter(|k| k.starts_with(&prefix))
        .cloned()
        .collect();
    if leaves.is_empty() {
        return None;
    }
    let get = |leaf: &str| devices.get(&format!("{prefix}{leaf}"));
    let adopted = Adopted {
        from: old.to_string(),
        class_instance: get("ClassAndVrmInstance")
            .and_then(Value::as_str)
            .filter(|s| parse_class_instance(s).is_some())
            .map(str::to_string),
        custom_name: get("CustomName")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        position: get("Position")
            .and_then(Value::as_i32)
            .filter(|p| (0..=2).contains(p)),
    };
    Some((adopted, leaves))
}

/// Reads the old entry `old` and removes it when the daemon's entry `new` does not exist yet;
/// what it held, for the caller to write into its new entry. Removal comes first: while the old
/// `ClassAndVrmInstance` exists, localsettings would give the new entry the next free instance
/// (docs/reference/victron.md §3). What was found is logged before anything is removed.
pub(super) fn take_over(
    settings: &mut Settings,
    old: &str,
    new: &str,
) -> Result<Option<Adopted>, Error> {
    let devices = settings.values_below(DEVICES)?;
    let Some((adopted, leaves)) = plan(&devices, old, new) else {
        return Ok(None);
    };
    log::info!(
        "adopting {DEVICES}/{old} of the previous driver as {DEVICES}/{new}: {}",
        adopted.describe()
    );
    let codes = settings.remove_settings(DEVICES, &leaves)?;
    for (leaf, code) in leaves.iter().zip(codes) {
        if code != 0 {
            log::warn!("removing {DEVICES}/{leaf} failed with {code}");
        }
    }
    log::info!("removed {} old settings of {DEVICES}/{old}", leaves.len());
    Ok(Some(adopted))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(entries: &[(&str, Value)]) -> BTreeMap<String, Value> {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn an_old_entry_is_adopted_once_and_removed_leaf_by_leaf() {
        let devices = store(&[
            ("cg_1/ClassAndVrmInstance", Value::from("grid:40")),
            ("cg_1/Enabled", Value::Int(1)),
            ("cg_1/CustomName", Value::from("House meter")),
            ("cg_10/ClassAndVrmInstance", Value::from("grid:41")),
            ("pv_X/Position", Value::Int(1)),
        ]);
        let (adopted, leaves) = plan(&devices, "cg_1", "eastron_1").unwrap();
        assert_eq!(
            adopted,
            Adopted {
                from: "cg_1".into(),
                class_instance: Some("grid:40".into()),
                custom_name: Some("House meter".into()),
                position: None,
            }
        );
        // Only the entry's own leaves: cg_10 is another device.
        assert_eq!(
            leaves,
            [
                "cg_1/ClassAndVrmInstance",
                "cg_1/CustomName",
                "cg_1/Enabled"
            ]
        );
        let (pv, _) = plan(&devices, "pv_X", "growatt_X").unwrap();
        assert_eq!(pv.position, Some(1));
        assert_eq!(pv.class_instance, None);
    }

    #[test]
    fn nothing_is_adopted_when_the_own_entry_exists_or_the_old_one_does_not() {
        let devices = store(&[
            ("cg_1/ClassAndVrmInstance", Value::from("grid:40")),
            ("eastron_1/ClassAndVrmInstance", Value::from("grid:41")),
        ]);
        assert_eq!(plan(&devices, "cg_1", "eastron_1"), None);
        assert_eq!(plan(&devices, "cg_2", "eastron_2"), None);
        assert_eq!(plan(&devices, "cg_1", "cg_1"), None);
    }

    #[test]
    fn malformed_old_values_are_removed_but_not_carried() {
        let devices = store(&[
            ("pv_/ClassAndVrmInstance", Value::from("pvinverter")),
            ("pv_/CustomName", Value::from("")),
            ("pv_/Position", Value::Int(7)),
        ]);
        let (adopted, leaves) = plan(&devices, "pv_", "growatt_X").unwrap();
        assert_eq!(adopted.describe(), "nothing to carry over");
        assert_eq!(leaves.len(), 3);
    }
}
