//! Field paths in a JSON answer (`items[*].secret`, `*.owner.email`, `["a.b"].c`), parsed once
//! at config load, and the set of paths a route's `allow` or `deny` list names, walked once per
//! answer however many paths it holds.
//!
//! The grammar is small on purpose (no filters, no recursion): `step ('.' name | '[' index ']')*`
//! where a step is a member name, `*` (every member), or a bracket: `[*]` (every element),
//! `[3]` (one element) or `["any text"]` (a member whose name holds `.`, `[` or `]`). A member
//! step that meets an array applies to each of its elements: `items.secret` and
//! `items[*].secret` name the same fields, so a list never stops a filter (KrakenD's does).
//! A general JSONPath crate (RFC 9535) selects but neither removes nor keeps, and its `$` and
//! filter expressions are more than a route needs; this grammar is the whole language.

use std::fmt;

use serde_json::{Map, Value};

/// The longest path text, and the most steps in one: a path is written by an operator, and
/// these bound what walking an answer against a list of them can cost.
const MAX_LENGTH: usize = 256;
const MAX_STEPS: usize = 32;

/// One step of a [`FieldPath`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// The member of this name.
    Member(String),
    /// Every member of an object (`*`).
    AnyMember,
    /// The element at this position (`[3]`).
    Element(usize),
    /// Every element of an array (`[*]`).
    AnyElement,
}

impl Step {
    /// Whether this step, walked from an object, takes its member `name`.
    fn takes_member(&self, name: &str) -> bool {
        match self {
            Self::Member(member) => member == name,
            Self::AnyMember => true,
            Self::Element(_) | Self::AnyElement => false,
        }
    }

    /// Whether this step, walked from an array, takes its element `index`.
    fn takes_element(&self, index: usize) -> bool {
        match self {
            Self::Element(at) => *at == index,
            Self::AnyElement => true,
            Self::Member(_) | Self::AnyMember => false,
        }
    }

    fn is_member_step(&self) -> bool {
        matches!(self, Self::Member(_) | Self::AnyMember)
    }
}

/// A path to fields of a JSON answer; only [`FieldPath::parse`] makes one, so it always has at
/// least one step and at most [`MAX_STEPS`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FieldPath {
    text: String,
    steps: Vec<Step>,
}

impl fmt::Display for FieldPath {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.text)
    }
}

impl FieldPath {
    pub fn parse(text: &str) -> Result<Self, String> {
        let refuse = |why: &str| Err(format!("{text:?} is not a field path: {why}"));
        if text.trim().is_empty() {
            return refuse("it is empty");
        }
        if text.len() > MAX_LENGTH {
            return refuse(&format!("longer than {MAX_LENGTH} characters"));
        }
        let mut steps = Vec::new();
        let mut rest = text;
        // Whether the next step may be a bare name (at the start, or after a `.`).
        let mut name_expected = true;
        while !rest.is_empty() {
            if let Some(inside) = rest.strip_prefix('[') {
                let Some(end) = bracket_end(inside) else {
                    return refuse("a `[` is not closed");
                };
                steps.push(match bracket_step(&inside[..end]) {
                    Ok(step) => step,
                    Err(why) => return refuse(&why),
                });
                rest = &inside[end + 1..];
                name_expected = false;
                if let Some(after) = rest.strip_prefix('.') {
                    rest = after;
                    name_expected = true;
                    if rest.is_empty() {
                        return refuse("it ends with `.`");
                    }
                }
                continue;
            }
            if !name_expected {
                return refuse("expected `.` or `[` after `]`");
            }
            let end = rest.find(['.', '[', ']']).unwrap_or(rest.len());
            let name = &rest[..end];
            if name.is_empty() {
                return refuse("a member name is empty (`..`, or a leading `.`)");
            }
            if name.chars().any(char::is_whitespace) {
                return refuse("a member name holds white space (quote it: `[\"a b\"]`)");
            }
            steps.push(if name == "*" {
                Step::AnyMember
            } else {
                Step::Member(name.to_owned())
            });
            rest = &rest[end..];
            match rest.chars().next() {
                Some('.') => {
                    rest = &rest[1..];
                    if rest.is_empty() {
                        return refuse("it ends with `.`");
                    }
                }
                Some('[') => name_expected = false,
                Some(_) => return refuse("a `]` without its `[`"),
                None => {}
            }
        }
        if steps.len() > MAX_STEPS {
            return refuse(&format!("more than {MAX_STEPS} steps"));
        }
        Ok(Self {
            text: text.to_owned(),
            steps,
        })
    }

    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// The member name this path ends with, when it ends with one (what `rename` needs).
    pub fn last_member(&self) -> Option<&str> {
        match self.steps.last() {
            Some(Step::Member(name)) => Some(name),
            _ => None,
        }
    }

    /// Calls `visit` with every object this path's steps up to its last one lead to in
    /// `value` (a member step meeting an array goes through each element).
    pub fn for_each_parent(
        &self,
        value: &mut Value,
        visit: &mut impl FnMut(&mut Map<String, Value>),
    ) {
        let parent = &self.steps[..self.steps.len().saturating_sub(1)];
        walk_to_objects(value, parent, visit);
    }
}

fn walk_to_objects(
    value: &mut Value,
    steps: &[Step],
    visit: &mut impl FnMut(&mut Map<String, Value>),
) {
    let Some((step, rest)) = steps.split_first() else {
        match value {
            Value::Object(object) => visit(object),
            // The parent is a list of objects: `items.name` renames in each.
            Value::Array(elements) => {
                for element in elements {
                    if let Value::Object(object) = element {
                        visit(object);
                    }
                }
            }
            _ => {}
        }
        return;
    };
    match value {
        Value::Object(object) => {
            for (name, member) in object.iter_mut() {
                if step.takes_member(name) {
                    walk_to_objects(member, rest, visit);
                }
            }
        }
        Value::Array(elements) => {
            for (index, element) in elements.iter_mut().enumerate() {
                if step.takes_element(index) {
                    walk_to_objects(element, rest, visit);
                } else if step.is_member_step() {
                    walk_to_objects(element, steps, visit);
                }
            }
        }
        _ => {}
    }
}

/// The end of a bracket's inside (the index of its `]`), a quoted name's `]` not counting.
fn bracket_end(inside: &str) -> Option<usize> {
    match inside.chars().next() {
        Some(quote @ ('"' | '\'')) => {
            let close = inside[1..].find(quote)? + 1;
            (inside[close + 1..].starts_with(']')).then_some(close + 1)
        }
        _ => inside.find(']'),
    }
}

fn bracket_step(inside: &str) -> Result<Step, String> {
    if inside == "*" {
        return Ok(Step::AnyElement);
    }
    if let Some(quoted) = inside
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .or_else(|| inside.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')))
    {
        if quoted.is_empty() {
            return Err("a quoted member name is empty".to_owned());
        }
        return Ok(Step::Member(quoted.to_owned()));
    }
    if inside.is_empty() {
        return Err("`[]` names nothing: write `[*]`, an index or a quoted name".to_owned());
    }
    if !inside.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "`[{inside}]` is neither `[*]`, an index nor a quoted name"
        ));
    }
    inside
        .parse()
        .map(Step::Element)
        .map_err(|_| format!("the index `{inside}` is too large"))
}

/// The paths of one `allow` or `deny` list as a tree of steps: an answer is walked once, each
/// member meeting only the branches that can take it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    root: Node,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Node {
    /// A path ends here: the field this node stands for is named by the list.
    end: bool,
    children: Vec<(Step, Node)>,
}

impl Node {
    fn has_member_steps(&self) -> bool {
        self.children.iter().any(|(step, _)| step.is_member_step())
    }
}

/// The nodes an object's member (or an array's element) meets, and whether a path ends on it.
struct Met<'a> {
    nodes: Vec<&'a Node>,
    named: bool,
}

impl<'a> Met<'a> {
    fn member(of: &[&'a Node], name: &str) -> Self {
        Self::collect(of.iter().flat_map(|node| {
            node.children
                .iter()
                .filter(|(step, _)| step.takes_member(name))
                .map(|(_, child)| child)
        }))
    }

    /// An element meets the nodes an index step of `of` takes it to, and, where `of` has
    /// member steps, `of` itself again: a member step goes through arrays.
    fn element(of: &[&'a Node], index: usize) -> Self {
        let mut met = Self::collect(of.iter().flat_map(|node| {
            node.children
                .iter()
                .filter(|(step, _)| step.takes_element(index))
                .map(|(_, child)| child)
        }));
        met.nodes
            .extend(of.iter().copied().filter(|node| node.has_member_steps()));
        met
    }

    fn collect(nodes: impl Iterator<Item = &'a Node>) -> Self {
        let nodes: Vec<&Node> = nodes.collect();
        let named = nodes.iter().any(|node| node.end);
        Self { nodes, named }
    }
}

impl FieldSet {
    pub fn new(paths: &[FieldPath]) -> Self {
        let mut root = Node::default();
        for path in paths {
            let mut node = &mut root;
            for step in path.steps() {
                let at = match node.children.iter().position(|(s, _)| s == step) {
                    Some(at) => at,
                    None => {
                        node.children.push((step.clone(), Node::default()));
                        node.children.len() - 1
                    }
                };
                node = &mut node.children[at].1;
            }
            node.end = true;
        }
        Self { root }
    }

    /// Removes every field a path of the set names.
    pub fn remove_from(&self, value: &mut Value) {
        remove(value, &[&self.root]);
    }

    /// Keeps only the fields a path of the set names (with the objects and arrays that hold
    /// them); what no path reaches is removed. A top-level scalar is left as it is.
    pub fn keep_in(&self, value: &mut Value) {
        if value.is_object() || value.is_array() {
            keep(value, &[&self.root]);
        }
    }
}

fn remove(value: &mut Value, nodes: &[&Node]) {
    match value {
        Value::Object(object) => {
            object.retain(|name, member| stays(Met::member(nodes, name), member));
        }
        Value::Array(elements) => {
            let mut index = 0;
            elements.retain_mut(|element| {
                let met = Met::element(nodes, index);
                index += 1;
                stays(met, element)
            });
        }
        _ => {}
    }
}

/// Whether a member or element that `met` what it did stays after `deny`: not when a path ends
/// on it; otherwise with what the paths going on remove from it.
fn stays(met: Met<'_>, child: &mut Value) -> bool {
    if met.named {
        return false;
    }
    if !met.nodes.is_empty() {
        remove(child, &met.nodes);
    }
    true
}

/// Whether `value`, reached through `nodes` (none of which ends here), keeps anything.
fn keep(value: &mut Value, nodes: &[&Node]) -> bool {
    match value {
        Value::Object(object) => {
            object.retain(|name, member| {
                let met = Met::member(nodes, name);
                met.named || (!met.nodes.is_empty() && keep(member, &met.nodes))
            });
            true
        }
        Value::Array(elements) => {
            let mut index = 0;
            elements.retain_mut(|element| {
                let met = Met::element(nodes, index);
                index += 1;
                met.named || (!met.nodes.is_empty() && keep(element, &met.nodes))
            });
            true
        }
        // A path goes on past it: the field it names is not there.
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn set(paths: &[&str]) -> FieldSet {
        let paths: Vec<FieldPath> = paths.iter().map(|p| FieldPath::parse(p).unwrap()).collect();
        FieldSet::new(&paths)
    }

    #[test]
    fn paths_are_read_step_by_step() {
        let path = FieldPath::parse("items[*].owner[\"e.mail\"][2].*").unwrap();
        assert_eq!(
            path.steps(),
            [
                Step::Member("items".into()),
                Step::AnyElement,
                Step::Member("owner".into()),
                Step::Member("e.mail".into()),
                Step::Element(2),
                Step::AnyMember,
            ]
        );
        assert_eq!(
            FieldPath::parse("[*].id").unwrap().steps(),
            [Step::AnyElement, Step::Member("id".into())]
        );
        assert_eq!(FieldPath::parse("a.b").unwrap().last_member(), Some("b"));
        assert_eq!(FieldPath::parse("a[*]").unwrap().last_member(), None);
    }

    #[test]
    fn malformed_and_hostile_paths_are_refused_with_a_reason() {
        let long = "a.".repeat(200) + "a";
        let deep = "a.".repeat(40) + "a";
        let cases = [
            ("", "empty"),
            ("   ", "blank"),
            ("items[", "an unclosed bracket"),
            ("items[*", "an unclosed bracket"),
            ("items]", "a stray `]`"),
            ("items[]", "an empty bracket"),
            ("items[-1]", "a negative index"),
            ("items[x]", "a bare word in brackets"),
            ("items[99999999999999999999999]", "an index past usize"),
            ("a..b", "an empty name"),
            (".a", "a leading dot"),
            ("a.", "a trailing dot"),
            ("a[0]b", "a name glued to a bracket"),
            ("a b", "white space"),
            ("[\"\"]", "an empty quoted name"),
            ("[\"a]", "an unclosed quote"),
            (long.as_str(), "too long"),
            (deep.as_str(), "too many steps"),
        ];
        for (text, why) in cases {
            let refused = FieldPath::parse(text);
            assert!(refused.is_err(), "{why}: {text:?} was read as {refused:?}");
        }
    }

    #[test]
    fn deny_removes_the_field_from_every_element_of_an_array() {
        let mut answer = json!({
            "items": [
                { "id": 1, "secret": "a", "internal_notes": "x" },
                { "id": 2, "secret": "b" },
                "not an object",
            ],
            "secret": "top-level stays",
        });
        set(&["items[*].secret", "items.internal_notes"]).remove_from(&mut answer);
        assert_eq!(
            answer,
            json!({
                "items": [{ "id": 1 }, { "id": 2 }, "not an object"],
                "secret": "top-level stays",
            })
        );
    }

    #[test]
    fn a_member_wildcard_reaches_every_member_and_through_arrays() {
        let mut answer = json!({
            "a": { "owner": { "email": "a@x", "name": "A" } },
            "b": [{ "owner": { "email": "b@x", "name": "B" } }],
            "c": 3,
        });
        set(&["*.owner.email"]).remove_from(&mut answer);
        assert_eq!(
            answer,
            json!({
                "a": { "owner": { "name": "A" } },
                "b": [{ "owner": { "name": "B" } }],
                "c": 3,
            })
        );
    }

    #[test]
    fn an_index_removes_one_element_and_the_rest_keep_their_order() {
        let mut answer = json!({ "list": [0, 1, 2, 3] });
        set(&["list[1]", "list[3]"]).remove_from(&mut answer);
        assert_eq!(answer, json!({ "list": [0, 2] }));
    }

    #[test]
    fn allow_keeps_only_what_its_paths_reach() {
        let mut answer = json!({
            "items": [
                { "id": 1, "name": "one", "secret": "s" },
                { "id": 2, "owner": { "email": "e", "name": "n" } },
            ],
            "total": 2,
            "debug": { "sql": "select" },
            "owner": "a string where an object was expected",
        });
        set(&["items[*].id", "items.owner.name", "total", "owner.name"]).keep_in(&mut answer);
        assert_eq!(
            answer,
            json!({
                "items": [{ "id": 1 }, { "id": 2, "owner": { "name": "n" } }],
                "total": 2,
            })
        );
    }

    #[test]
    fn allow_and_deny_leave_a_top_level_scalar_alone() {
        let mut answer = json!("just text");
        set(&["a"]).keep_in(&mut answer);
        set(&["a"]).remove_from(&mut answer);
        assert_eq!(answer, json!("just text"));
    }

    #[test]
    fn a_deeply_nested_answer_is_walked_only_as_deep_as_the_paths_go() {
        let mut answer = json!({ "a": { "b": { "c": { "d": 1, "e": 2 } } } });
        set(&["a.b.c.d"]).remove_from(&mut answer);
        assert_eq!(answer, json!({ "a": { "b": { "c": { "e": 2 } } } }));
    }

    #[test]
    fn each_parent_a_path_leads_to_is_visited_once() {
        let mut answer = json!({ "items": [{ "old": 1 }, { "old": 2 }], "old": 0 });
        let path = FieldPath::parse("items[*].old").unwrap();
        let mut visited = 0;
        path.for_each_parent(&mut answer, &mut |object| {
            visited += 1;
            assert!(object.contains_key("old"));
        });
        assert_eq!(visited, 2);
    }
}
