//! The relations and user types the stream described, which give row changes their names,
//! columns and (in the text format) type names.

use std::collections::HashMap;

use super::escape::text_ident;
use super::types::builtin_type_name;
use crate::logical::pgoutput::{Message, RelColumn};

/// A relation as the last Relation message described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelInfo {
    pub namespace: String,
    pub name: String,
    pub columns: Vec<ColInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColInfo {
    pub name: String,
    pub type_oid: u32,
    pub key: bool,
}

impl RelInfo {
    pub fn from_message(namespace: &str, name: &str, columns: &[RelColumn<'_>]) -> RelInfo {
        RelInfo {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            columns: columns
                .iter()
                .map(|c| ColInfo { name: c.name.to_owned(), type_oid: c.type_oid, key: c.is_key() })
                .collect(),
        }
    }
}

/// Relations and user types by OID, as the stream described them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schema {
    pub relations: HashMap<u32, RelInfo>,
    pub types: HashMap<u32, String>,
}

impl Schema {
    /// Records a Relation or Type message; false for any other message.
    pub fn learn(&mut self, msg: &Message<'_>) -> bool {
        match msg {
            Message::Relation(r) => {
                self.relations.insert(r.oid, RelInfo::from_message(r.namespace, r.name, &r.columns));
                true
            }
            Message::Type(t) => {
                // Only the text format names types; quoted as it writes names.
                self.types.insert(t.oid, format!("{}.{}", text_ident(t.namespace), text_ident(t.name)));
                true
            }
            _ => false,
        }
    }

    /// Takes over everything `other` knows (a streamed transaction's schema, at its commit).
    pub fn merge(&mut self, other: Schema) {
        self.relations.extend(other.relations);
        self.types.extend(other.types);
    }

    pub(super) fn type_name(&self, type_oid: u32) -> String {
        builtin_type_name(type_oid)
            .map(str::to_owned)
            .or_else(|| self.types.get(&type_oid).cloned())
            .unwrap_or_else(|| type_oid.to_string())
    }
}
