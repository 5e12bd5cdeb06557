//! What is wrong with a configuration, and where: every mistake names the line and column the
//! parser recorded for the value and the field's path (`routes[3].service`), so it can be fixed
//! without guessing. [`Mistakes`] gathers them, so one run reports them all.

use std::collections::BTreeMap;
use std::fmt;

use marked_yaml::{Span, Spanned};

/// A place in the file, as the YAML parser recorded it: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    /// Where `span` starts; `None` for a value the parser did not place (a default).
    pub fn of(span: &Span) -> Option<Self> {
        span.start().map(|mark| Self {
            line: mark.line(),
            column: mark.column(),
        })
    }
}

/// One mistake: where, which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mistake {
    pub at: Option<Position>,
    /// The field's path from the top of the file, such as `services.users.timeout`; empty for
    /// a mistake about the file as a whole (a syntax error).
    pub field: String,
    pub message: String,
}

impl Mistake {
    /// The mistake as one line, prefixed by `file` and the position: `file:line:column: field:
    /// message`.
    pub fn in_file<'a>(&'a self, file: &'a str) -> impl fmt::Display + 'a {
        InFile {
            file,
            mistake: self,
        }
    }
}

struct InFile<'a> {
    file: &'a str,
    mistake: &'a Mistake,
}

impl fmt::Display for InFile<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Mistake { at, field, message } = self.mistake;
        write!(f, "{}", self.file)?;
        if let Some(Position { line, column }) = at {
            write!(f, ":{line}:{column}")?;
        }
        if !field.is_empty() {
            write!(f, ": {field}")?;
        }
        write!(f, ": {message}")
    }
}

/// Every mistake found so far, one per field.
///
/// A value refused by its type is left out so the rest of the file can still be checked;
/// the checks that then see its default must not blame the same field again, so a second
/// mistake for a field already named is dropped.
#[derive(Debug, Default)]
pub struct Mistakes {
    found: Vec<Mistake>,
    /// The `${VAR}`s a substituted scalar came from, by its position: a mistake in that value
    /// names them, since the file alone does not show the value.
    origins: BTreeMap<Position, Vec<String>>,
}

impl Mistakes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that the scalar at `at` was substituted from the variables `names`.
    pub(crate) fn substituted(&mut self, at: Position, names: Vec<String>) {
        self.origins.insert(at, names);
    }

    /// A mistake in `field`, at `span` when the parser placed it.
    pub fn add(
        &mut self,
        field: impl Into<String>,
        span: Option<&Span>,
        message: impl Into<String>,
    ) {
        self.push(field.into(), span.and_then(Position::of), message.into());
    }

    /// A mistake in the value of `field`, where the file gives it.
    pub fn at<T>(
        &mut self,
        field: impl Into<String>,
        value: &Spanned<T>,
        message: impl Into<String>,
    ) {
        self.add(field, Some(value.span()), message);
    }

    /// A mistake about the file as a whole, or a field whose place is unknown.
    pub fn push(&mut self, field: String, at: Option<Position>, mut message: String) {
        if !field.is_empty() && self.found.iter().any(|seen| seen.field == field) {
            return;
        }
        if let Some(names) = at.and_then(|at| self.origins.get(&at)) {
            let names: Vec<String> = names.iter().map(|name| format!("${{{name}}}")).collect();
            message.push_str(&format!(" (the value comes from {})", names.join(", ")));
        }
        self.found.push(Mistake { at, field, message });
    }

    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    pub fn len(&self) -> usize {
        self.found.len()
    }

    /// `value` if nothing was found, else every mistake, in the order of the file.
    pub fn finish<T>(self, value: T) -> Result<T, Vec<Mistake>> {
        if self.found.is_empty() {
            return Ok(value);
        }
        Err(self.into_sorted())
    }

    /// The mistakes in the order of the file; those without a place last.
    pub fn into_sorted(self) -> Vec<Mistake> {
        let mut found = self.found;
        found.sort_by_key(|mistake| (mistake.at.is_none(), mistake.at));
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: usize, column: usize) -> Option<Position> {
        Some(Position { line, column })
    }

    #[test]
    fn a_mistake_reads_file_line_column_field_and_reason() {
        let mistake = Mistake {
            at: at(7, 5),
            field: "routes[0].service".into(),
            message: "unknown service `nobody`".into(),
        };
        assert_eq!(
            mistake.in_file("gateway.yaml").to_string(),
            "gateway.yaml:7:5: routes[0].service: unknown service `nobody`"
        );
        let whole = Mistake {
            at: None,
            field: String::new(),
            message: "too large".into(),
        };
        assert_eq!(whole.in_file("g.yaml").to_string(), "g.yaml: too large");
    }

    #[test]
    fn one_mistake_per_field_in_the_order_of_the_file() {
        let mut mistakes = Mistakes::new();
        mistakes.push("b".into(), at(9, 1), "second".into());
        mistakes.push("a".into(), at(2, 3), "first".into());
        mistakes.push("a".into(), at(2, 3), "a follow-on of the first".into());
        mistakes.push("c".into(), None, "unplaced".into());
        let found = mistakes.finish(()).unwrap_err();
        let messages: Vec<&str> = found.iter().map(|m| m.message.as_str()).collect();
        assert_eq!(messages, ["first", "second", "unplaced"]);
    }

    #[test]
    fn a_mistake_in_a_substituted_value_names_its_variable() {
        let mut mistakes = Mistakes::new();
        mistakes.substituted(Position { line: 3, column: 7 }, vec!["TIMEOUT".into()]);
        mistakes.push("timeout".into(), at(3, 7), "not a duration".into());
        let found = mistakes.finish(()).unwrap_err();
        assert_eq!(
            found[0].message,
            "not a duration (the value comes from ${TIMEOUT})"
        );
    }
}
