//! The plan of a composition, built once when the configuration is loaded: its parts in an
//! order where each comes after the parts it takes a field from, each part's `to` parsed into
//! pieces that know where they sit (path or query), so a value is always encoded for its place.
//! Everything that can be wrong with a plan (a cycle, an unknown part or parameter, a field of a
//! part that may fail silently) is found here, not while a request waits.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;

/// Names a part may not take: `errors` is the answer's own member, `query` names the client's
/// query in a template.
pub const RESERVED_NAMES: [&str; 2] = ["errors", "query"];

/// The largest part answer taken when a part does not say.
pub const DEFAULT_MAX_BODY: u64 = 1024 * 1024;

/// A composition: its parts, each after every part it needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    /// The member of the answer it fills.
    pub name: Arc<str>,
    pub service: Arc<str>,
    pub to: Target,
    /// Its failure fails the whole answer; else its member is `null` and `errors` says why.
    pub required: bool,
    /// Default: the service's.
    pub timeout: Option<Duration>,
    pub max_body: u64,
    /// The parts (indices into [`Plan::parts`], all earlier) it takes a field from.
    pub needs: Vec<usize>,
}

/// A part as the file writes it, for [`Plan::build`].
pub struct PartSpec<'a> {
    pub service: &'a str,
    pub to: &'a str,
    pub required: bool,
    pub timeout: Option<Duration>,
    pub max_body: u64,
}

/// What is wrong with a plan, at one part (`key` is the part's key at fault, `to` or none).
#[derive(Debug, PartialEq, Eq)]
pub struct PlanMistake {
    pub part: String,
    pub key: Option<&'static str>,
    pub message: String,
}

/// A part's `to`, parsed: literal text and the values put into it.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Literal(String),
    Value { source: Source, place: Place },
}

#[derive(Debug, Clone, PartialEq)]
enum Source {
    /// A parameter of the route's path, as the client sent it (still percent-encoded).
    Param(String),
    /// A parameter of the client's query (`{query.name}`); absent → empty.
    Query(String),
    /// A field of an earlier part's answer (`{user.last_order_id}`, `{user.orders.0.id}`).
    Field { part: usize, path: Vec<String> },
}

/// Where a value goes, which decides how it is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Path,
    Query,
}

/// Everything but RFC 3986's unreserved characters is encoded inside a path segment: a `/`,
/// `?`, `#`, `%` or `;` in a value can never reach the service as structure.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

impl Target {
    /// The path part of the target with every substituted value shown as `{}` (a segment that
    /// will hold some value), for finding the service's operation it calls in its document.
    pub fn path_shape(&self) -> String {
        let mut shape = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Literal(text) => shape.push_str(text),
                Piece::Value {
                    place: Place::Path, ..
                } => shape.push_str("{}"),
                Piece::Value {
                    place: Place::Query,
                    ..
                } => {}
            }
        }
        match shape.split_once('?') {
            Some((path, _)) => path.to_owned(),
            None => shape,
        }
    }
}

/// Why a part's target could not be filled in for this request: the part fails with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfilled(pub String);

impl Plan {
    /// The plan of a route at `path` with `parts` (by name, as the file lists them); every
    /// mistake is returned, each at its part.
    pub fn build(
        path: &str,
        parts: &BTreeMap<String, PartSpec<'_>>,
    ) -> Result<Self, Vec<PlanMistake>> {
        let mut mistakes = Vec::new();
        let names: Vec<&str> = parts.keys().map(String::as_str).collect();
        let mut parsed: Vec<(Target, Vec<usize>)> = Vec::with_capacity(parts.len());
        for (name, spec) in parts {
            if RESERVED_NAMES.contains(&name.as_str()) {
                mistakes.push(PlanMistake {
                    part: name.clone(),
                    key: None,
                    message: format!(
                        "a part may not be named {}: the answer or the template uses that name",
                        RESERVED_NAMES.map(|n| format!("`{n}`")).join(" or ")
                    ),
                });
            }
            match Target::parse(spec.to, path, &names, parts) {
                Ok((target, needs)) => parsed.push((target, needs)),
                Err(message) => {
                    mistakes.push(PlanMistake {
                        part: name.clone(),
                        key: Some("to"),
                        message,
                    });
                    parsed.push((Target { pieces: Vec::new() }, Vec::new()));
                }
            }
        }
        let order = match topological(
            &parsed
                .iter()
                .map(|(_, needs)| needs.clone())
                .collect::<Vec<_>>(),
        ) {
            Ok(order) => order,
            Err(cycle) => {
                let named: Vec<&str> = cycle.iter().map(|&i| names[i]).collect();
                for &i in &cycle {
                    mistakes.push(PlanMistake {
                        part: names[i].to_owned(),
                        key: Some("to"),
                        message: format!(
                            "the parts {} take fields of each other (a cycle): none could start",
                            named.join(", ")
                        ),
                    });
                }
                Vec::new()
            }
        };
        if !mistakes.is_empty() {
            return Err(mistakes);
        }
        // Renumber: from the file's (name) order to the running order.
        let mut position = vec![0; names.len()];
        for (at, &index) in order.iter().enumerate() {
            position[index] = at;
        }
        let specs: Vec<&PartSpec<'_>> = parts.values().collect();
        let parts = order
            .iter()
            .map(|&index| {
                let (target, needs) = &parsed[index];
                let spec = specs[index];
                Part {
                    name: Arc::from(names[index]),
                    service: Arc::from(spec.service),
                    to: target.renumbered(&position),
                    required: spec.required,
                    timeout: spec.timeout,
                    max_body: spec.max_body,
                    needs: needs.iter().map(|&n| position[n]).collect(),
                }
            })
            .collect();
        Ok(Self { parts })
    }

    /// The services the parts call.
    pub fn services(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().map(|part| &*part.service)
    }
}

impl Target {
    /// Parses `to` for a route at `path` among the parts `names`; also returns the parts whose
    /// fields it takes (indices into `names`).
    fn parse(
        to: &str,
        path: &str,
        names: &[&str],
        parts: &BTreeMap<String, PartSpec<'_>>,
    ) -> Result<(Self, Vec<usize>), String> {
        if !to.starts_with('/') {
            return Err(format!("{to:?} must start with `/`"));
        }
        if to.contains(['#', ' ']) {
            return Err(format!("{to:?} may not hold a space or a fragment"));
        }
        let mut pieces = Vec::new();
        let mut needs = Vec::new();
        let mut place = Place::Path;
        let mut rest = to;
        while let Some(open) = rest.find('{') {
            let literal = &rest[..open];
            if literal.contains('}') {
                return Err(format!("{to:?} has a `}}` without its `{{`"));
            }
            if literal.contains('?') {
                place = Place::Query;
            }
            if !literal.is_empty() {
                pieces.push(Piece::Literal(literal.to_owned()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("{to:?} has an unclosed `{{`"))?
                + open;
            let inner = &rest[open + 1..close];
            let source = source(inner, to, path, names, parts, place)?;
            if let Source::Field { part, .. } = &source {
                if !needs.contains(part) {
                    needs.push(*part);
                }
            }
            pieces.push(Piece::Value { source, place });
            rest = &rest[close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("{to:?} has a `}}` without its `{{`"));
        }
        if !rest.is_empty() {
            pieces.push(Piece::Literal(rest.to_owned()));
        }
        Ok((Self { pieces }, needs))
    }

    fn renumbered(&self, position: &[usize]) -> Self {
        let pieces = self
            .pieces
            .iter()
            .map(|piece| match piece {
                Piece::Value {
                    source: Source::Field { part, path },
                    place,
                } => Piece::Value {
                    source: Source::Field {
                        part: position[*part],
                        path: path.clone(),
                    },
                    place: *place,
                },
                other => other.clone(),
            })
            .collect();
        Self { pieces }
    }

    /// The path and query on the service for this request: `params` from the route's path,
    /// `query` the client's query string, `answers` the parts answered so far (by index).
    /// Every value is encoded for its place, so none can change the path or add a parameter.
    pub fn render(
        &self,
        params: &[(&str, &str)],
        query: Option<&str>,
        answers: &[Option<Value>],
        names: &dyn Fn(usize) -> Arc<str>,
    ) -> Result<String, Unfilled> {
        let mut out = String::with_capacity(64);
        for piece in &self.pieces {
            match piece {
                Piece::Literal(text) => out.push_str(text),
                Piece::Value { source, place } => {
                    let value = match source {
                        Source::Param(name) => {
                            let raw = params
                                .iter()
                                .find(|(n, _)| n == name)
                                .map_or("", |(_, v)| *v);
                            // Decoded first: the client's encoding is not trusted to be the
                            // one this place needs (`&` is plain in a path, not in a query).
                            percent_decode_str(raw).decode_utf8_lossy().into_owned()
                        }
                        Source::Query(name) => query
                            .and_then(|query| {
                                form_urlencoded::parse(query.as_bytes())
                                    .find(|(n, _)| n == name.as_str())
                                    .map(|(_, v)| v.into_owned())
                            })
                            .unwrap_or_default(),
                        Source::Field { part, path } => field(
                            answers.get(*part).and_then(Option::as_ref),
                            path,
                            &names(*part),
                        )?,
                    };
                    match place {
                        Place::Path => {
                            if value.is_empty() || value == "." || value == ".." {
                                return Err(Unfilled(format!(
                                    "the value {value:?} cannot stand in a path (it would change which resource is asked for)"
                                )));
                            }
                            out.extend(utf8_percent_encode(&value, SEGMENT));
                        }
                        Place::Query => {
                            out.extend(form_urlencoded::byte_serialize(value.as_bytes()))
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

/// What `{inner}` names.
fn source(
    inner: &str,
    to: &str,
    path: &str,
    names: &[&str],
    parts: &BTreeMap<String, PartSpec<'_>>,
    place: Place,
) -> Result<Source, String> {
    let Some((head, tail)) = inner.split_once('.') else {
        let name = inner.trim_start_matches('*');
        let declared = !name.is_empty()
            && (path.contains(&format!("{{{name}}}")) || path.contains(&format!("{{*{name}}}")));
        if !declared {
            return Err(format!(
                "{to:?} uses `{{{inner}}}`, which the route's path {path:?} does not define (a part's field is `{{part.field}}`)"
            ));
        }
        return Ok(Source::Param(name.to_owned()));
    };
    if head == "query" {
        if tail.is_empty() || tail.contains('.') {
            return Err(format!(
                "{to:?}: `{{{inner}}}` must name one query parameter"
            ));
        }
        if place == Place::Path {
            return Err(format!(
                "{to:?}: `{{{inner}}}` may only be used after the `?` (a missing query parameter is empty)"
            ));
        }
        return Ok(Source::Query(tail.to_owned()));
    }
    let Some(part) = names.iter().position(|name| *name == head) else {
        return Err(format!(
            "{to:?} uses a field of `{head}`, which is no part of this composition (parts: {})",
            names.join(", ")
        ));
    };
    if parts.get(head).is_some_and(|spec| !spec.required) {
        return Err(format!(
            "{to:?} uses a field of `{head}`, which is optional: when it failed, this part could not be asked (make `{head}` required, or do not depend on it)"
        ));
    }
    let path: Vec<String> = tail.split('.').map(str::to_owned).collect();
    if path.iter().any(String::is_empty) {
        return Err(format!("{to:?}: `{{{inner}}}` has an empty field name"));
    }
    Ok(Source::Field { part, path })
}

/// The scalar at `path` in `answer` as text, or why there is none.
fn field(answer: Option<&Value>, path: &[String], part: &str) -> Result<String, Unfilled> {
    let named = || format!("{part}.{}", path.join("."));
    let mut at = answer.ok_or_else(|| Unfilled(format!("`{part}` has not answered")))?;
    for key in path {
        let next = match at {
            Value::Object(members) => members.get(key),
            Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        };
        at = next.ok_or_else(|| {
            Unfilled(format!(
                "the field `{}` is missing from `{part}`'s answer",
                named()
            ))
        })?;
    }
    match at {
        Value::String(text) => Ok(text.clone()),
        Value::Number(number) => Ok(number.to_string()),
        Value::Bool(flag) => Ok(flag.to_string()),
        Value::Null => Err(Unfilled(format!(
            "the field `{}` is null in `{part}`'s answer",
            named()
        ))),
        Value::Array(_) | Value::Object(_) => Err(Unfilled(format!(
            "the field `{}` in `{part}`'s answer is not a single value",
            named()
        ))),
    }
}

/// An order of the nodes where each comes after the nodes it needs, or the nodes on cycles.
fn topological(needs: &[Vec<usize>]) -> Result<Vec<usize>, Vec<usize>> {
    let mut placed = vec![false; needs.len()];
    let mut order = Vec::with_capacity(needs.len());
    loop {
        let ready: Vec<usize> = (0..needs.len())
            .filter(|&i| !placed[i] && needs[i].iter().all(|&n| placed[n]))
            .collect();
        if ready.is_empty() {
            break;
        }
        for i in ready {
            placed[i] = true;
            order.push(i);
        }
    }
    if order.len() == needs.len() {
        Ok(order)
    } else {
        Err((0..needs.len()).filter(|&i| !placed[i]).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec<'a>(service: &'a str, to: &'a str, required: bool) -> PartSpec<'a> {
        PartSpec {
            service,
            to,
            required,
            timeout: None,
            max_body: DEFAULT_MAX_BODY,
        }
    }

    fn plan(path: &str, parts: &[(&str, PartSpec<'static>)]) -> Result<Plan, Vec<PlanMistake>> {
        let parts = parts
            .iter()
            .map(|(name, spec)| {
                (
                    (*name).to_owned(),
                    PartSpec {
                        service: spec.service,
                        to: spec.to,
                        required: spec.required,
                        timeout: spec.timeout,
                        max_body: spec.max_body,
                    },
                )
            })
            .collect();
        Plan::build(path, &parts)
    }

    fn render(
        plan: &Plan,
        part: &str,
        params: &[(&str, &str)],
        query: Option<&str>,
        answers: &[Option<Value>],
    ) -> Result<String, Unfilled> {
        let names: Vec<Arc<str>> = plan.parts.iter().map(|p| Arc::clone(&p.name)).collect();
        let part = plan.parts.iter().find(|p| &*p.name == part).unwrap();
        part.to
            .render(params, query, answers, &|i| Arc::clone(&names[i]))
    }

    #[test]
    fn a_part_that_takes_a_field_runs_after_the_part_it_names() {
        // `a` sorts first by name but needs `b`.
        let plan = plan(
            "/u/{id}",
            &[
                ("a", spec("orders", "/orders/{b.last}", true)),
                ("b", spec("users", "/users/{id}", true)),
            ],
        )
        .unwrap();
        let names: Vec<&str> = plan.parts.iter().map(|p| &*p.name).collect();
        assert_eq!(names, ["b", "a"]);
        assert_eq!(plan.parts[1].needs, [0]);
        let answers = [Some(serde_json::json!({ "last": 42 })), None];
        assert_eq!(
            render(&plan, "a", &[], None, &answers).unwrap(),
            "/orders/42"
        );
    }

    #[test]
    fn hostile_values_stay_inside_their_segment_or_query_value() {
        let plan = plan(
            "/u/{id}",
            &[
                ("user", spec("users", "/users/{id}", true)),
                (
                    "orders",
                    spec(
                        "orders",
                        "/orders/{user.last}?user_id={id}&sort={query.sort}",
                        true,
                    ),
                ),
            ],
        )
        .unwrap();
        let answers = [Some(serde_json::json!({ "last": "../admin?x=1#y" })), None];
        let rendered = render(
            &plan,
            "orders",
            &[("id", "7%26admin%3Dtrue")],
            Some("sort=a%26b"),
            &answers,
        )
        .unwrap();
        assert_eq!(
            rendered,
            "/orders/..%2Fadmin%3Fx%3D1%23y?user_id=7%26admin%3Dtrue&sort=a%26b"
        );

        for hostile in ["..", ".", ""] {
            let answers = [Some(serde_json::json!({ "last": hostile })), None];
            let error = render(&plan, "orders", &[("id", "7")], None, &answers).unwrap_err();
            assert!(
                error.0.contains("cannot stand in a path"),
                "{hostile:?}: {error:?}"
            );
        }
    }

    #[test]
    fn a_missing_or_composite_field_fails_the_part_with_its_name() {
        let plan = plan(
            "/u",
            &[
                ("user", spec("users", "/me", true)),
                ("orders", spec("orders", "/orders/{user.last}", true)),
            ],
        )
        .unwrap();
        for (answer, expected) in [
            (serde_json::json!({}), "the field `user.last` is missing"),
            (serde_json::json!({ "last": null }), "is null"),
            (
                serde_json::json!({ "last": { "id": 1 } }),
                "not a single value",
            ),
            (serde_json::json!({ "last": [1] }), "not a single value"),
            (serde_json::json!([1]), "missing"),
        ] {
            let error =
                render(&plan, "orders", &[], None, &[Some(answer.clone()), None]).unwrap_err();
            assert!(error.0.contains(expected), "{answer}: {error:?}");
        }
    }

    #[test]
    fn every_mistake_in_a_plan_is_named_at_its_part() {
        let mistakes = plan(
            "/u/{id}",
            &[
                ("a", spec("s", "/a/{b.x}", true)),
                ("b", spec("s", "/b/{a.y}", true)),
                ("c", spec("s", "/c/{nope}", true)),
                ("d", spec("s", "/d/{ghost.x}", true)),
                ("e", spec("s", "/e", false)),
                ("f", spec("s", "/f/{e.x}", true)),
                ("errors", spec("s", "/g", true)),
                ("h", spec("s", "/h/{query.x}", true)),
                ("i", spec("s", "relative", true)),
            ],
        )
        .unwrap_err();
        let said = |part: &str, text: &str| {
            assert!(
                mistakes
                    .iter()
                    .any(|m| m.part == part && m.message.contains(text)),
                "{part}: {text}: {mistakes:#?}"
            );
        };
        said("c", "does not define");
        said("d", "no part of this composition");
        said("f", "which is optional");
        said("errors", "may not be named");
        said("h", "only be used after the `?`");
        said("i", "must start with `/`");
        let (a, b) = (plan_cycle(&mistakes, "a"), plan_cycle(&mistakes, "b"));
        assert!(a && b, "both parts of the cycle are named: {mistakes:#?}");
    }

    fn plan_cycle(mistakes: &[PlanMistake], part: &str) -> bool {
        mistakes
            .iter()
            .any(|m| m.part == part && m.message.contains("a cycle"))
    }

    #[test]
    fn a_part_that_names_itself_is_a_cycle() {
        let mistakes = plan("/u", &[("a", spec("s", "/a/{a.x}", true))]).unwrap_err();
        assert!(plan_cycle(&mistakes, "a"), "{mistakes:#?}");
    }
}
