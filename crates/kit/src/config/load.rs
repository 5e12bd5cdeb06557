//! A YAML configuration file into a typed value, the same way for every binary.
//!
//! The parser is `marked-yaml` (on `yaml-rust2`): it keeps the line and column of every node,
//! deserializes with serde from its node tree with the field path of an error
//! (`serde_path_to_error`), refuses duplicate keys and anchors, and — because it gives a tree
//! before serde runs — lets `${VAR}` be substituted inside scalars *after* parsing, so an
//! environment value can never become structure. (`serde_yaml_ng` positions only its own
//! syntax and type errors, has no spans for values a later check refuses and expands aliases;
//! `serde-saphyr` needs a newer Rust than the workspace's and deserializes from events, leaving
//! no tree to substitute in.)
//!
//! Every mistake is collected: a value its type refuses is recorded, taken out of the tree and
//! the rest deserialized again (its field then takes its default), so one run names all the
//! bad values; a service's own checks add theirs to the same [`Mistakes`].

use std::path::Path;

use marked_yaml::types::MarkedScalarNode;
use marked_yaml::{LoaderOptions, Marker, Node};
use serde::de::DeserializeOwned;
use yaml_rust2::parser::{Event, Parser};

use super::mistake::{Mistake, Mistakes, Position};
use super::vars::Vars;

/// The largest file read: a configuration is a few kilobytes, and a huge one is a mistake or
/// an attack, refused before it is parsed.
pub const MAX_BYTES: usize = 1024 * 1024;
/// The deepest nesting of mappings and sequences: configurations are a few levels deep, and
/// deserializing (and dropping) a tree is recursive.
pub const MAX_DEPTH: usize = 32;
/// After this many mistakes the rest is not looked at: nobody fixes more at once.
const MAX_MISTAKES: usize = 64;

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{file}: cannot read: {cause}")]
    Read { file: String, cause: std::io::Error },
    /// Every mistake found, in the order of the file, one per line when shown.
    #[error("{}", listed(file, mistakes))]
    Invalid {
        file: String,
        mistakes: Vec<Mistake>,
    },
}

fn listed(file: &str, mistakes: &[Mistake]) -> String {
    let lines: Vec<String> = mistakes
        .iter()
        .map(|mistake| mistake.in_file(file).to_string())
        .collect();
    lines.join("\n")
}

/// Reads, parses and deserializes the file at `path`; `Err` lists every mistake.
pub fn load<T: DeserializeOwned>(path: &Path, vars: &Vars) -> Result<T, LoadError> {
    let text = read(path)?;
    parse(&text, &path.display().to_string(), vars)
}

/// The text of the file at `path`: at most [`MAX_BYTES`], and UTF-8.
pub fn read(path: &Path) -> Result<String, LoadError> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|cause| LoadError::Read {
        file: file.clone(),
        cause,
    })?;
    if bytes.len() > MAX_BYTES {
        return Err(too_large(&file));
    }
    String::from_utf8(bytes).map_err(|error| {
        let valid = &error.as_bytes()[..error.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        let column = valid.iter().rev().take_while(|&&b| b != b'\n').count() + 1;
        LoadError::Invalid {
            file,
            mistakes: vec![Mistake {
                at: Some(Position { line, column }),
                field: String::new(),
                message: "the file is not UTF-8 text".to_owned(),
            }],
        }
    })
}

fn too_large(file: &str) -> LoadError {
    LoadError::Invalid {
        file: file.to_owned(),
        mistakes: vec![Mistake {
            at: None,
            field: String::new(),
            message: format!("the file is larger than {MAX_BYTES} bytes; a configuration never is"),
        }],
    }
}

/// Parses and deserializes `text`, named `file` in mistakes; `Err` lists every mistake.
pub fn parse<T: DeserializeOwned>(text: &str, file: &str, vars: &Vars) -> Result<T, LoadError> {
    let (value, mistakes) = parse_collecting(text, file, vars)?;
    mistakes
        .finish(value)
        .map_err(|mistakes| LoadError::Invalid {
            file: file.to_owned(),
            mistakes,
        })
}

/// Like [`parse`], but a value is returned as long as it could be built, with the mistakes
/// found on the way (values refused by their type, left at their defaults), so the caller's
/// own checks can add theirs and report everything together with [`Mistakes::finish`].
pub fn parse_collecting<T: DeserializeOwned>(
    text: &str,
    file: &str,
    vars: &Vars,
) -> Result<(T, Mistakes), LoadError> {
    let invalid = |mistakes: Vec<Mistake>| LoadError::Invalid {
        file: file.to_owned(),
        mistakes,
    };
    if text.len() > MAX_BYTES {
        return Err(too_large(file));
    }
    check_shape(text).map_err(|mistake| invalid(vec![mistake]))?;
    let options = LoaderOptions::default().error_on_duplicate_keys(true);
    let mut root = marked_yaml::parse_yaml_with_options(0, text, options)
        .map_err(|error| invalid(vec![refused(error)]))?;
    let mut mistakes = Mistakes::new();
    substitute(&mut root, "", vars, &mut mistakes);
    match deserialize(&mut root, &mut mistakes) {
        Some(value) => Ok((value, mistakes)),
        None => Err(invalid(mistakes.into_sorted())),
    }
}

fn position(mark: &Marker) -> Position {
    Position {
        line: mark.line(),
        column: mark.column(),
    }
}

/// Walks the parser's events once before a tree is built: a syntax error, an anchor or alias
/// (a "billion laughs" file expands a few lines into gigabytes) or nesting deeper than
/// [`MAX_DEPTH`] is refused here, at its place, before anything is expanded or allocated.
fn check_shape(text: &str) -> Result<(), Mistake> {
    let mut parser = Parser::new_from_str(text);
    let mut depth = 0usize;
    let refuse = |mark: yaml_rust2::scanner::Marker, message: &str| Mistake {
        at: Some(Position {
            line: mark.line(),
            column: mark.col() + 1,
        }),
        field: String::new(),
        message: message.to_owned(),
    };
    const ANCHORS: &str =
        "anchors and aliases (`&name`, `*name`) are not supported; write the value out";
    loop {
        let (event, mark) = parser.next_token().map_err(|error| {
            let line = error.marker().line();
            let mut message = error.info().to_owned();
            // `{` and `}` end a plain value inside `{ }` or `[ ]`: since `${VAR}` is expanded
            // after parsing, it must be quoted there. Only the hint reads the text.
            let flow = message.contains("flow");
            if flow
                && text
                    .lines()
                    .nth(line.saturating_sub(1))
                    .is_some_and(|l| l.contains("${"))
            {
                message.push_str(" (inside `{ }` or `[ ]`, put \"${VAR}\" in quotes)");
            }
            Mistake {
                at: Some(Position {
                    line,
                    column: error.marker().col() + 1,
                }),
                field: String::new(),
                message,
            }
        })?;
        match event {
            Event::StreamEnd => return Ok(()),
            Event::Alias(_) => return Err(refuse(mark, ANCHORS)),
            Event::Scalar(_, _, anchor, _) if anchor > 0 => return Err(refuse(mark, ANCHORS)),
            Event::MappingStart(anchor, _) | Event::SequenceStart(anchor, _) => {
                if anchor > 0 {
                    return Err(refuse(mark, ANCHORS));
                }
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(refuse(
                        mark,
                        &format!("nested deeper than {MAX_DEPTH} levels"),
                    ));
                }
            }
            Event::MappingEnd | Event::SequenceEnd => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
}

/// What the tree builder refused, at its place.
fn refused(error: marked_yaml::LoadError) -> Mistake {
    use marked_yaml::LoadError as E;
    let (at, field, message) = match error {
        E::TopLevelMustBeMapping(mark) => (
            mark,
            String::new(),
            "the file must be a mapping of settings (`name: value` lines)".to_owned(),
        ),
        E::TopLevelMustBeSequence(mark) => (mark, String::new(), "expected a list".to_owned()),
        E::UnexpectedAnchor(mark) => (
            mark,
            String::new(),
            "anchors and aliases (`&name`, `*name`) are not supported; write the value out"
                .to_owned(),
        ),
        E::MappingKeyMustBeScalar(mark) => {
            (mark, String::new(), "a key must be a plain name".to_owned())
        }
        E::UnexpectedTag(mark) => (
            mark,
            String::new(),
            "YAML tags (`!name`) are not supported".to_owned(),
        ),
        E::ScanError(mark, error) => (mark, String::new(), error.info().to_owned()),
        E::DuplicateKey(duplicate) => {
            let first = duplicate
                .prev_key
                .span()
                .start()
                .map(|mark| format!(" (first at line {}:{})", mark.line(), mark.column()))
                .unwrap_or_default();
            let mark = duplicate
                .key
                .span()
                .start()
                .copied()
                .unwrap_or_else(|| Marker::new(0, 0, 0, 0));
            (
                mark,
                duplicate.key.as_str().to_owned(),
                format!("given twice{first}; the second would silently replace the first"),
            )
        }
    };
    Mistake {
        at: Some(position(&at)),
        field,
        message,
    }
}

/// Expands `${VAR}` inside every scalar value (never in keys), in place: the scalar keeps its
/// position, and remembers the variables it came from.
fn substitute(node: &mut Node, path: &str, vars: &Vars, mistakes: &mut Mistakes) {
    match node {
        Node::Scalar(scalar) => match vars.expand(scalar.as_str()) {
            Ok(None) => {}
            Ok(Some(expanded)) => {
                let span = *scalar.span();
                if let Some(at) = Position::of(&span) {
                    mistakes.substituted(at, expanded.names);
                }
                let may_coerce = scalar.may_coerce();
                let mut replaced = MarkedScalarNode::new(span, expanded.value);
                replaced.set_coerce(may_coerce);
                *scalar = replaced;
            }
            Err(message) => mistakes.add(path, Some(scalar.span()), message),
        },
        Node::Mapping(map) => {
            for (key, value) in map.iter_mut() {
                let path = if path.is_empty() {
                    key.as_str().to_owned()
                } else {
                    format!("{path}.{}", key.as_str())
                };
                substitute(value, &path, vars, mistakes);
            }
        }
        Node::Sequence(items) => {
            for (index, item) in items.iter_mut().enumerate() {
                substitute(item, &format!("{path}[{index}]"), vars, mistakes);
            }
        }
    }
}

/// Deserializes `root`, taking each value serde refuses out of the tree (recorded in
/// `mistakes`) and trying again, so the rest is still checked. `None` when no value could be
/// built: a required field is missing or refused, or a refused value could not be taken out.
fn deserialize<T: DeserializeOwned>(root: &mut Node, mistakes: &mut Mistakes) -> Option<T> {
    let mut taken_out: Vec<String> = Vec::new();
    for _ in 0..MAX_MISTAKES {
        let error = match marked_yaml::from_node::<T>(root) {
            Ok(value) => return Some(value),
            Err(error) => error,
        };
        let field = error.path().unwrap_or_default().to_owned();
        let mark = error.start_mark();
        let (message, which) = match &*error {
            marked_yaml::spanned_serde::Error::UnknownFieldError(name, expected, _) => {
                (unknown_field(name, expected), Part::Key)
            }
            other => (other.to_string(), Part::Value),
        };
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next());
        if missing.is_some_and(|name| taken_out.iter().any(|taken| taken == name)) {
            // Required, and refused above: that mistake is already named.
            return None;
        }
        mistakes.push(field, mark.as_ref().map(position), message);
        let at = mark.as_ref().map(position)?;
        taken_out.push(take_out(root, at, which)?);
    }
    None
}

#[derive(Clone, Copy)]
enum Part {
    Key,
    Value,
}

/// Removes the mapping entry whose key (or value) starts at `at`, the innermost one; its key.
fn take_out(node: &mut Node, at: Position, part: Part) -> Option<String> {
    match node {
        Node::Scalar(_) => None,
        Node::Sequence(items) => items.iter_mut().find_map(|item| take_out(item, at, part)),
        Node::Mapping(map) => {
            if let Some(key) = map
                .iter_mut()
                .find_map(|(_, value)| take_out(value, at, part))
            {
                return Some(key);
            }
            let key = map
                .iter()
                .find(|(key, value)| {
                    let span = match part {
                        Part::Key => key.span(),
                        Part::Value => value.span(),
                    };
                    Position::of(span) == Some(at)
                })
                .map(|(key, _)| key.clone())?;
            map.remove(&key);
            Some(key.as_str().to_owned())
        }
    }
}

fn unknown_field(name: &str, expected: &[&str]) -> String {
    let expected: Vec<String> = expected.iter().map(|field| format!("`{field}`")).collect();
    match expected.len() {
        0 => format!("unknown field `{name}`: no fields are expected here"),
        _ => format!(
            "unknown field `{name}`, expected one of {}",
            expected.join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Settings {
        name: String,
        #[serde(default, with = "humantime_serde")]
        timeout: Option<Duration>,
        #[serde(default)]
        port: u16,
        #[serde(default)]
        nested: Nested,
        #[serde(default)]
        list: Vec<String>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Nested {
        #[serde(default, with = "humantime_serde")]
        every: Option<Duration>,
        #[serde(default)]
        label: String,
    }

    fn mistakes(text: &str, vars: &Vars) -> Vec<Mistake> {
        match parse::<Settings>(text, "s.yaml", vars) {
            Ok(settings) => panic!("{text:?} must be refused, got {settings:?}"),
            Err(LoadError::Invalid { mistakes, .. }) => mistakes,
            Err(other) => panic!("{other}"),
        }
    }

    fn at(line: usize, column: usize) -> Option<Position> {
        Some(Position { line, column })
    }

    #[test]
    fn a_file_is_read_into_its_type() {
        let settings: Settings = parse(
            "name: a\ntimeout: 250ms\nport: 8080\nnested: { every: 1m }\nlist: [x]\n",
            "s.yaml",
            &Vars::new(),
        )
        .unwrap();
        assert_eq!(settings.timeout, Some(Duration::from_millis(250)));
        assert_eq!(settings.port, 8080);
        assert_eq!(settings.nested.every, Some(Duration::from_secs(60)));
        assert_eq!(settings.list, ["x"]);
    }

    #[test]
    fn every_bad_value_is_named_with_its_line_column_and_path_in_one_run() {
        let found = mistakes(
            "name: a\ntimeout: soon\nport: lots\nnested:\n  every: often\n",
            &Vars::new(),
        );
        let fields: Vec<(&str, Option<Position>)> =
            found.iter().map(|m| (m.field.as_str(), m.at)).collect();
        assert_eq!(
            fields,
            [
                ("timeout", at(2, 10)),
                ("port", at(3, 7)),
                ("nested.every", at(5, 10)),
            ],
            "{found:?}"
        );
    }

    #[test]
    fn unknown_and_missing_fields_are_named() {
        let found = mistakes("nmae: a\n", &Vars::new());
        assert_eq!(found[0].at, at(1, 1));
        assert!(
            found[0].message.starts_with("unknown field `nmae`"),
            "{found:?}"
        );
        assert!(
            found.iter().any(|m| m.message == "missing field `name`"),
            "{found:?}"
        );
    }

    #[test]
    fn a_required_value_refused_by_its_type_is_named_once() {
        let found = mistakes("name: [a]\n", &Vars::new());
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].field, "name");
    }

    #[test]
    fn a_substituted_value_stays_one_scalar_whatever_it_holds() {
        for hostile in [
            "a\nport: 1",
            "a: b",
            "{ x: 1 }",
            "- item",
            "a # not a comment",
            "*alias",
            "&anchor x",
        ] {
            let vars = Vars::new().set("NAME", hostile);
            let settings: Settings = parse(
                "name: ${NAME}\nnested: { label: \"x${NAME}\" }\n",
                "s.yaml",
                &vars,
            )
            .unwrap();
            assert_eq!(settings.name, hostile);
            assert_eq!(settings.nested.label, format!("x{hostile}"));
            assert_eq!(settings.port, 0, "{hostile:?} must not set another field");
        }
    }

    #[test]
    fn a_substituted_value_its_type_refuses_names_the_variable() {
        let vars = Vars::new().set("TIMEOUT", "soon");
        let found = mistakes("name: a\ntimeout: ${TIMEOUT}\n", &vars);
        assert_eq!(found[0].field, "timeout");
        assert!(found[0].message.contains("${TIMEOUT}"), "{found:?}");
    }

    #[test]
    fn an_unquoted_reference_inside_braces_is_a_syntax_error_with_a_hint() {
        let found = mistakes("name: a\nnested: { label: ${LABEL} }\n", &Vars::new());
        assert_eq!(found[0].at.map(|p| p.line), Some(2), "{found:?}");
        assert!(found[0].message.contains("in quotes"), "{found:?}");
    }

    #[test]
    fn an_unset_variable_is_named_at_its_place() {
        let found = mistakes(
            "name: a\nnested: { label: \"${GATEHOUSE_SURELY_UNSET_VAR}\" }\n",
            &Vars::new(),
        );
        assert_eq!(found[0].field, "nested.label");
        assert_eq!(found[0].at, at(2, 18));
        assert!(found[0].message.contains("GATEHOUSE_SURELY_UNSET_VAR"));
    }

    #[test]
    fn comments_are_not_expanded() {
        let settings: Settings = parse(
            "name: a # ${GATEHOUSE_SURELY_UNSET_VAR}\n# ${GATEHOUSE_SURELY_UNSET_VAR}\n",
            "s.yaml",
            &Vars::new(),
        )
        .unwrap();
        assert_eq!(settings.name, "a");
    }

    #[test]
    fn a_billion_laughs_is_refused_at_its_first_anchor() {
        let mut text = String::from("name: a\nlist: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
        for level in 1..10 {
            let previous = level - 1;
            text.push_str(&format!(
                "l{level}: &a{level} [*a{previous},*a{previous},*a{previous},*a{previous},*a{previous},*a{previous},*a{previous},*a{previous},*a{previous}]\n"
            ));
        }
        let found = mistakes(&text, &Vars::new());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].at.map(|p| p.line), Some(2));
        assert!(
            found[0].message.contains("anchors and aliases"),
            "{found:?}"
        );
    }

    #[test]
    fn deep_nesting_is_refused_before_a_tree_is_built() {
        let deep = format!("name: a\nlist: {}{}\n", "[".repeat(200), "]".repeat(200));
        assert!(mistakes(&deep, &Vars::new())[0]
            .message
            .contains("nested deeper"));
        let block = format!("name: a\nlist:\n{}x\n", "- ".repeat(100_000));
        assert!(mistakes(&block, &Vars::new())[0]
            .message
            .contains("nested deeper"));
    }

    #[test]
    fn a_huge_file_is_refused_unparsed() {
        let huge = format!("name: \"{}\"\n", "x".repeat(MAX_BYTES));
        let found = mistakes(&huge, &Vars::new());
        assert!(found[0].message.contains("larger than"), "{found:?}");
    }

    #[test]
    fn a_duplicate_key_is_refused_at_its_second_place() {
        let found = mistakes("name: a\nport: 1\nport: 2\n", &Vars::new());
        assert_eq!(found[0].at, at(3, 1));
        assert_eq!(found[0].field, "port");
        assert!(found[0].message.contains("given twice (first at line 2:1)"));
    }

    #[test]
    fn tabs_and_syntax_errors_are_placed() {
        let found = mistakes("name: a\nnested:\n\tevery: 1s\n", &Vars::new());
        assert_eq!(found[0].at.map(|p| p.line), Some(3), "{found:?}");
        let found = mistakes("name: [a\n", &Vars::new());
        assert!(found[0].at.is_some(), "{found:?}");
    }

    #[test]
    fn tags_and_a_top_level_that_is_not_a_mapping_are_refused() {
        assert!(mistakes("name: !secret a\n", &Vars::new())[0]
            .message
            .contains("tags"));
        assert!(mistakes("- a\n", &Vars::new())[0]
            .message
            .contains("mapping"));
    }

    #[test]
    fn a_file_that_is_not_utf8_is_refused_at_its_first_bad_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.yaml");
        std::fs::write(&path, b"name: a\nlabel: \xff\xfe\n").unwrap();
        let Err(LoadError::Invalid { mistakes, .. }) = load::<Settings>(&path, &Vars::new()) else {
            panic!("must be refused");
        };
        assert_eq!(mistakes[0].at, at(2, 8));
        let shown = LoadError::Invalid {
            file: "s.yaml".into(),
            mistakes,
        }
        .to_string();
        assert_eq!(shown, "s.yaml:2:8: the file is not UTF-8 text");
    }

    #[test]
    fn a_missing_file_is_a_read_error() {
        let error = load::<Settings>(Path::new("/nonexistent/s.yaml"), &Vars::new()).unwrap_err();
        assert!(matches!(error, LoadError::Read { .. }), "{error}");
    }
}
