//! What a route does to the fields of a JSON answer: keep only an `allow` list or remove a
//! `deny` list (never both: which wins would be a guess), then `rename` members. Filters name
//! the service's own member names, renames come after them, so a list reads like the service's
//! documentation.

use serde_json::{Map, Value};

use super::path::{FieldPath, FieldSet};

/// Which fields an answer keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// Only these (and the objects and arrays holding them).
    Allow(FieldSet),
    /// All but these.
    Deny(FieldSet),
}

/// A member renamed wherever `from` leads; `from` always ends in a member name (config load
/// refuses a wildcard or an index there: the new name would have nothing to replace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rename {
    pub from: FieldPath,
    pub to: String,
}

impl Rename {
    /// A path a member can be renamed from: one that ends in a member name.
    pub fn source(text: &str) -> Result<FieldPath, String> {
        let path = FieldPath::parse(text)?;
        if path.last_member().is_none() {
            return Err(format!(
                "`{path}` must end in a member name to be renamed (not `*` or an index)"
            ));
        }
        Ok(path)
    }

    /// A member's new name: any text but none.
    pub fn target(text: &str) -> Result<String, String> {
        if text.is_empty() {
            return Err("a member needs a name".to_owned());
        }
        Ok(text.to_owned())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonRules {
    pub filter: Option<Filter>,
    pub rename: Vec<Rename>,
}

impl JsonRules {
    pub fn apply(&self, value: &mut Value) {
        match &self.filter {
            Some(Filter::Allow(fields)) => fields.keep_in(value),
            Some(Filter::Deny(fields)) => fields.remove_from(value),
            None => {}
        }
        for rename in &self.rename {
            let Some(old) = rename.from.last_member() else {
                continue;
            };
            rename
                .from
                .for_each_parent(value, &mut |object| rename_member(object, old, &rename.to));
        }
    }
}

/// Renames `old` to `new` in `object`, in its place among the members. A member already named
/// `new` gives way: the rename says which value the client sees under that name.
fn rename_member(object: &mut Map<String, Value>, old: &str, new: &str) {
    if old == new || !object.contains_key(old) {
        return;
    }
    let members = std::mem::take(object);
    for (name, member) in members {
        if name == old {
            object.insert(new.to_owned(), member);
        } else if name != new {
            object.insert(name, member);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn paths(texts: &[&str]) -> FieldSet {
        let paths: Vec<FieldPath> = texts.iter().map(|p| FieldPath::parse(p).unwrap()).collect();
        FieldSet::new(&paths)
    }

    fn rename(from: &str, to: &str) -> Rename {
        Rename {
            from: FieldPath::parse(from).unwrap(),
            to: to.to_owned(),
        }
    }

    #[test]
    fn a_rename_keeps_the_member_in_its_place_in_every_element() {
        let rules = JsonRules {
            filter: None,
            rename: vec![rename("items[*].cust_id", "customer_id")],
        };
        let mut answer = json!({ "items": [{ "a": 1, "cust_id": 7, "z": 2 }, { "b": 1 }] });
        rules.apply(&mut answer);
        assert_eq!(
            serde_json::to_string(&answer).unwrap(),
            r#"{"items":[{"a":1,"customer_id":7,"z":2},{"b":1}]}"#
        );
    }

    #[test]
    fn filters_name_the_services_fields_and_renames_come_after_them() {
        let rules = JsonRules {
            filter: Some(Filter::Deny(paths(&["secret"]))),
            rename: vec![rename("name", "title")],
        };
        let mut answer = json!({ "name": "n", "secret": "s", "title": "overwritten" });
        rules.apply(&mut answer);
        assert_eq!(answer, json!({ "title": "n" }));
    }
}
