//! The item tree of one service: leaves with values, implicit intermediate nodes, introspection.

use super::value::{Format, Value, Writable, format_text};
use std::collections::BTreeMap;

#[derive(Debug)]
pub(crate) struct Item {
    pub value: Value,
    pub format: Format,
    pub writable: Writable,
    pub changed: bool,
}

impl Item {
    pub(super) fn text(&self) -> String {
        format_text(&self.value, self.format)
    }
}

/// What an object path is in the tree.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub(crate) enum Node {
    Leaf,
    /// `/` or an intermediate node: it has leaves below it.
    Branch,
    Unknown,
}

#[derive(Debug, Default)]
pub(crate) struct Tree {
    items: BTreeMap<String, Item>,
}

/// A valid Victron/D-Bus object path for a leaf: `/A/B_c`, no trailing slash, no empty element.
pub(crate) fn is_valid_leaf_path(path: &str) -> bool {
    path.len() > 1
        && path.starts_with('/')
        && path[1..]
            .split('/')
            .all(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
}

/// `path` with a trailing slash, so that prefix matching stops at element boundaries.
fn node_prefix(path: &str) -> String {
    if path == "/" {
        "/".to_string()
    } else {
        format!("{path}/")
    }
}

impl Tree {
    pub(super) fn insert(&mut self, path: &str, item: Item) {
        self.items.insert(path.to_string(), item);
    }

    pub(super) fn remove(&mut self, path: &str) -> bool {
        self.items.remove(path).is_some()
    }

    pub(super) fn get(&self, path: &str) -> Option<&Item> {
        self.items.get(path)
    }

    pub(super) fn get_mut(&mut self, path: &str) -> Option<&mut Item> {
        self.items.get_mut(path)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&String, &Item)> {
        self.items.iter()
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (&String, &mut Item)> {
        self.items.iter_mut()
    }

    pub(super) fn kind(&self, path: &str) -> Node {
        if self.items.contains_key(path) {
            Node::Leaf
        } else if path == "/" || self.below(path).next().is_some() {
            Node::Branch
        } else {
            Node::Unknown
        }
    }

    /// Leaves below a node with their key relative to the node, no leading slash (node GetValue).
    pub(super) fn below<'a>(
        &'a self,
        node: &str,
    ) -> impl Iterator<Item = (&'a str, &'a Item)> + 'a {
        let prefix = node_prefix(node);
        let plen = prefix.len();
        self.items
            .range(prefix.clone()..)
            .take_while(move |(k, _)| k.starts_with(&prefix))
            .filter_map(move |(k, v)| k.get(plen..).map(|rel| (rel, v)))
    }

    /// Names of the direct children of a node (for introspection), sorted and unique.
    pub(super) fn children(&self, node: &str) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .below(node)
            .filter_map(|(rel, _)| rel.split('/').next())
            .collect();
        names.dedup();
        names
    }

    /// Introspection XML of an object: the BusItem methods it answers, the one signal the
    /// service sends (ItemsChanged, on `/`; no per-item PropertiesChanged, see `Service::flush`)
    /// and its child nodes.
    pub(super) fn introspect(&self, path: &str) -> String {
        let kind = self.kind(path);
        let mut x = String::with_capacity(1024);
        x.push_str(concat!(
            "<!DOCTYPE node PUBLIC \"-//freedesktop//DTD D-BUS Object Introspection 1.0//EN\"\n",
            " \"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd\">\n<node>\n",
            " <interface name=\"org.freedesktop.DBus.Introspectable\">\n",
            "  <method name=\"Introspect\"><arg name=\"xml\" type=\"s\" direction=\"out\"/></method>\n",
            " </interface>\n",
            " <interface name=\"com.victronenergy.BusItem\">\n",
            "  <method name=\"GetValue\"><arg name=\"value\" type=\"v\" direction=\"out\"/></method>\n",
        ));
        if kind == Node::Leaf {
            x.push_str(concat!(
                "  <method name=\"GetText\"><arg name=\"text\" type=\"s\" direction=\"out\"/></method>\n",
                "  <method name=\"SetValue\"><arg name=\"value\" type=\"v\" direction=\"in\"/>",
                "<arg name=\"result\" type=\"i\" direction=\"out\"/></method>\n",
            ));
        } else {
            x.push_str(
                "  <method name=\"GetText\"><arg name=\"text\" type=\"v\" direction=\"out\"/></method>\n",
            );
        }
        if path == "/" {
            x.push_str(concat!(
                "  <method name=\"GetItems\"><arg name=\"items\" type=\"a{sa{sv}}\" direction=\"out\"/></method>\n",
                "  <signal name=\"ItemsChanged\"><arg name=\"changes\" type=\"a{sa{sv}}\"/></signal>\n",
            ));
        }
        x.push_str(" </interface>\n");
        for child in self.children(path) {
            x.push_str(" <node name=\"");
            x.push_str(child);
            x.push_str("\"/>\n");
        }
        x.push_str("</node>\n");
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(paths: &[&str]) -> Tree {
        let mut t = Tree::default();
        for p in paths {
            t.insert(
                p,
                Item {
                    value: Value::Int(1),
                    format: Format::Plain,
                    writable: Writable::No,
                    changed: false,
                },
            );
        }
        t
    }

    #[test]
    fn kinds_and_relative_keys() {
        let t = tree(&["/Ac/L1/Power", "/Ac/Power", "/Acx", "/DeviceInstance"]);
        assert_eq!(t.kind("/"), Node::Branch);
        assert_eq!(t.kind("/Ac"), Node::Branch);
        assert_eq!(t.kind("/Ac/Power"), Node::Leaf);
        assert_eq!(t.kind("/A"), Node::Unknown);
        assert_eq!(t.kind("/Ac/L2"), Node::Unknown);
        let rel: Vec<&str> = t.below("/Ac").map(|(k, _)| k).collect();
        assert_eq!(rel, ["L1/Power", "Power"]);
        let root: Vec<&str> = t.below("/").map(|(k, _)| k).collect();
        assert_eq!(root, ["Ac/L1/Power", "Ac/Power", "Acx", "DeviceInstance"]);
    }

    #[test]
    fn children_are_unique_direct_names() {
        let t = tree(&[
            "/Ac/L1/Power",
            "/Ac/L1/Current",
            "/Ac/Power",
            "/Mgmt/ProcessName",
        ]);
        assert_eq!(t.children("/"), ["Ac", "Mgmt"]);
        assert_eq!(t.children("/Ac"), ["L1", "Power"]);
        assert!(t.children("/Ac/Power").is_empty());
    }

    #[test]
    fn introspection_lists_methods_per_kind() {
        let t = tree(&["/Ac/Power"]);
        let root = t.introspect("/");
        assert!(root.contains("GetItems") && root.contains("<node name=\"Ac\"/>"));
        assert!(!root.contains("SetValue"));
        let leaf = t.introspect("/Ac/Power");
        assert!(
            leaf.contains("SetValue") && !leaf.contains("GetItems") && !leaf.contains("<node name")
        );
        // Only signals that are sent are advertised.
        assert!(!leaf.contains("<signal") && root.contains("\"ItemsChanged\""));
    }

    #[test]
    fn leaf_path_validation() {
        assert!(is_valid_leaf_path("/Ac/L1/Power"));
        for bad in ["", "/", "Ac", "/Ac/", "//Ac", "/Ac.x", "/Ac/L 1"] {
            assert!(!is_valid_leaf_path(bad), "{bad}");
        }
    }
}
