//! Reading the file: `${VAR}` and `${VAR:-default}` are replaced before the YAML is parsed
//! (`$$` is a literal `$`), so secrets and ports come from the environment, never the file.

use std::collections::HashMap;

use super::{schema, validate, ConfigError, GatewayConfig};

/// Values for `${VAR}` that take precedence over the environment (`gatehouse up` sets ports
/// and the data folder this way, without touching the process environment).
#[derive(Debug, Clone, Default)]
pub struct Vars(HashMap<String, String>);

impl Vars {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.0.insert(name.into(), value.into());
        self
    }

    fn get(&self, name: &str) -> Option<String> {
        self.0
            .get(name)
            .cloned()
            .or_else(|| std::env::var(name).ok())
    }
}

pub fn load_file(path: &std::path::Path, vars: &Vars) -> Result<GatewayConfig, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
        file: file.clone(),
        cause,
    })?;
    parse(&text, &file, vars)
}

/// Parses and validates a configuration; `file` names it in errors.
pub fn parse(text: &str, file: &str, vars: &Vars) -> Result<GatewayConfig, ConfigError> {
    let expanded = interpolate(text, vars).map_err(|(line, message)| ConfigError::Syntax {
        file: file.to_owned(),
        line,
        message,
    })?;
    let raw: schema::File =
        serde_yaml_ng::from_str(&expanded).map_err(|error| ConfigError::Syntax {
            file: file.to_owned(),
            line: error.location().map_or(0, |l| l.line()),
            message: error.to_string(),
        })?;
    validate::validate(raw, file).map_err(|error| locate(error, &expanded))
}

/// Adds the line of the field an error names (or of the route its message names).
fn locate(error: ConfigError, text: &str) -> ConfigError {
    let ConfigError::Invalid {
        file,
        field,
        message,
    } = error
    else {
        return error;
    };
    let route = message
        .split("routes[")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .filter(|index| index.bytes().all(|b| b.is_ascii_digit()))
        .map(|index| format!("routes[{index}]"));
    let path = if field == "routes" {
        route.unwrap_or_else(|| field.clone())
    } else {
        field.clone()
    };
    match super::locate::line_of(text, &path) {
        Some(line) => ConfigError::InvalidAt {
            file,
            line,
            field,
            message,
        },
        None => ConfigError::Invalid {
            file,
            field,
            message,
        },
    }
}

fn interpolate(text: &str, vars: &Vars) -> Result<String, (usize, String)> {
    let mut out = String::with_capacity(text.len());
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let line_number = index + 1;
        let (code, comment) = line.split_at(comment_start(line));
        out.push_str(&expand_line(code, vars).map_err(|message| (line_number, message))?);
        out.push_str(comment);
    }
    Ok(out)
}

/// Where a YAML comment starts on `line` (a `#` at the start or after a space, outside
/// quotes), or its length: comments are left as written.
fn comment_start(line: &str) -> usize {
    let mut quote: Option<u8> = None;
    let mut previous = b' ';
    for (i, byte) in line.bytes().enumerate() {
        match (quote, byte) {
            (None, b'#') if previous == b' ' || previous == b'\t' => return i,
            (None, b'"' | b'\'') => quote = Some(byte),
            (Some(open), _) if byte == open => quote = None,
            _ => {}
        }
        previous = byte;
    }
    line.len()
}

/// The quote a YAML scalar is open with at byte `at` of `line`, if any.
fn quote_at(line: &str, at: usize) -> Option<u8> {
    let mut quote: Option<u8> = None;
    let mut escaped = false;
    for &byte in &line.as_bytes()[..at] {
        match (quote, byte) {
            (Some(b'"'), b'\\') if !escaped => {
                escaped = true;
                continue;
            }
            (None, b'"' | b'\'') => quote = Some(byte),
            (Some(open), _) if byte == open && !escaped => quote = None,
            _ => {}
        }
        escaped = false;
    }
    quote
}

/// `value` as it may stand where it is substituted: escaped inside quotes; outside them, only
/// if YAML would read it as plain text, never as structure (a `#` comment, a `,` or `}` ending
/// a flow map…), so a secret can neither be cut short nor inject settings.
fn quoted_for(quote: Option<u8>, name: &str, value: &str) -> Result<String, String> {
    match quote {
        Some(b'"') => Ok(value.replace('\\', "\\\\").replace('"', "\\\"")),
        Some(_) => Ok(value.replace('\'', "''")),
        None => {
            let structural = value.contains([',', '[', ']', '{', '}', '#', '"', '\'', '`'])
                || value.contains(": ")
                || value.ends_with(':')
                || value.starts_with(['&', '*', '!', '|', '>', '%', '@', '-', '?', ' '])
                || value.ends_with(' ');
            if structural {
                Err(format!(
                    "environment variable `{name}` holds characters YAML would read as structure; put `${{{name}}}` in double quotes in the file"
                ))
            } else {
                Ok(value.to_owned())
            }
        }
    }
}

fn expand_line(line: &str, vars: &Vars) -> Result<String, String> {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or("unclosed `${` in variable reference".to_owned())?;
            let reference = &body[..end];
            let (name, default) = match reference.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (reference, None),
            };
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!("`${{{reference}}}` is not a valid variable name"));
            }
            let value = vars
                .get(name)
                .or_else(|| default.map(str::to_owned))
                .ok_or_else(|| format!("environment variable `{name}` is not set"))?;
            if value.contains('\n') {
                return Err(format!("environment variable `{name}` holds a line break"));
            }
            let at = line.len() - rest.len() + dollar;
            out.push_str(&quoted_for(quote_at(line, at), name, &value)?);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_come_from_the_given_values_then_defaults() {
        let vars = Vars::new().set("PORT", "9000");
        let text = "a: ${PORT}\nb: ${GATEHOUSE_SURELY_UNSET_VAR:-x}\nc: $$HOME $5\n";
        assert_eq!(
            interpolate(text, &vars).unwrap(),
            "a: 9000\nb: x\nc: $HOME $5\n"
        );
    }

    #[test]
    fn a_missing_variable_names_itself_and_its_line() {
        let error =
            interpolate("a: 1\nb: ${GATEHOUSE_SURELY_UNSET_VAR}\n", &Vars::new()).unwrap_err();
        assert_eq!(error.0, 2);
        assert!(
            error.1.contains("GATEHOUSE_SURELY_UNSET_VAR"),
            "{}",
            error.1
        );
    }

    #[test]
    fn malformed_references_are_refused() {
        assert!(interpolate("a: ${", &Vars::new()).is_err());
        assert!(interpolate("a: ${A B}", &Vars::new()).is_err());
        assert!(interpolate("a: ${}", &Vars::new()).is_err());
    }

    #[test]
    fn a_value_cannot_change_the_structure_around_it() {
        let vars = Vars::new()
            .set("SECRET", "abc #tail")
            .set("QUOTE", "a\"b\\c")
            .set("PLAIN", "s3cr3t");
        let error = interpolate("store: postgres://u:${SECRET}@h/db\n", &vars).unwrap_err();
        assert!(error.1.contains("double quotes"), "{}", error.1);
        assert!(interpolate(
            "a: { x: ${PLAIN}, y: 1 }\n",
            &vars.clone().set("PLAIN", "1, z: 2")
        )
        .is_err());
        assert_eq!(
            interpolate("s: \"u:${SECRET}@h\"\n", &vars).unwrap(),
            "s: \"u:abc #tail@h\"\n"
        );
        assert_eq!(
            interpolate("s: \"${QUOTE}\"\n", &vars).unwrap(),
            "s: \"a\\\"b\\\\c\"\n"
        );
        assert_eq!(
            interpolate("s: '${QUOTE}'\n", &vars.clone().set("QUOTE", "it's")).unwrap(),
            "s: 'it''s'\n"
        );
        assert_eq!(
            interpolate("s: u:${PLAIN}@h\n", &vars).unwrap(),
            "s: u:s3cr3t@h\n"
        );
    }

    #[test]
    fn comments_are_left_as_written() {
        let text = "a: 1 # uses ${GATEHOUSE_SURELY_UNSET_VAR}\n# ${GATEHOUSE_SURELY_UNSET_VAR}\nb: \"x # ${P}\"\n";
        let expanded = interpolate(text, &Vars::new().set("P", "y")).unwrap();
        assert_eq!(expanded, "a: 1 # uses ${GATEHOUSE_SURELY_UNSET_VAR}\n# ${GATEHOUSE_SURELY_UNSET_VAR}\nb: \"x # y\"\n");
    }
}
