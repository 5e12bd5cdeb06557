//! `${VAR}` values. A reference is expanded inside one scalar the parser has already read, so a
//! value can never become YAML structure, whatever it holds (`\n`, `: `, `{`, `- `, `#`).
//! `${VAR:-default}` gives a default, `$$` is a literal `$`; any other `$` stays as written.

use std::collections::HashMap;

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

    /// `text` with its references replaced, and the names of the variables used; `Ok(None)`
    /// when `text` holds no `$` at all.
    pub(crate) fn expand(&self, text: &str) -> Result<Option<Expanded>, String> {
        if !text.contains('$') {
            return Ok(None);
        }
        let mut value = String::with_capacity(text.len());
        let mut names = Vec::new();
        let mut rest = text;
        while let Some(dollar) = rest.find('$') {
            value.push_str(&rest[..dollar]);
            let after = &rest[dollar + 1..];
            if let Some(stripped) = after.strip_prefix('$') {
                value.push('$');
                rest = stripped;
            } else if let Some(body) = after.strip_prefix('{') {
                let end = body
                    .find('}')
                    .ok_or_else(|| "unclosed `${` in a variable reference".to_owned())?;
                let reference = &body[..end];
                let (name, default) = match reference.split_once(":-") {
                    Some((name, default)) => (name, Some(default)),
                    None => (reference, None),
                };
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(format!("`${{{reference}}}` is not a valid variable name"));
                }
                let found = self
                    .get(name)
                    .or_else(|| default.map(str::to_owned))
                    .ok_or_else(|| format!("environment variable `{name}` is not set"))?;
                value.push_str(&found);
                names.push(name.to_owned());
                rest = &body[end + 1..];
            } else {
                value.push('$');
                rest = after;
            }
        }
        value.push_str(rest);
        Ok(Some(Expanded { value, names }))
    }
}

/// A scalar after expansion, and the variables it came from.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Expanded {
    pub value: String,
    pub names: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(text: &str, vars: &Vars) -> Result<String, String> {
        Ok(vars
            .expand(text)?
            .map_or_else(|| text.to_owned(), |e| e.value))
    }

    #[test]
    fn variables_come_from_the_given_values_then_defaults() {
        let vars = Vars::new().set("PORT", "9000");
        assert_eq!(
            expand("127.0.0.1:${PORT}", &vars).unwrap(),
            "127.0.0.1:9000"
        );
        assert_eq!(
            expand("${GATEHOUSE_SURELY_UNSET_VAR:-x}", &vars).unwrap(),
            "x"
        );
        assert_eq!(expand("$$HOME $5", &vars).unwrap(), "$HOME $5");
        assert_eq!(
            vars.expand("${PORT}/${PORT}").unwrap().unwrap().names,
            ["PORT", "PORT"]
        );
    }

    #[test]
    fn a_missing_variable_names_itself() {
        let error = expand("${GATEHOUSE_SURELY_UNSET_VAR}", &Vars::new()).unwrap_err();
        assert!(error.contains("GATEHOUSE_SURELY_UNSET_VAR"), "{error}");
    }

    #[test]
    fn malformed_references_are_refused() {
        for text in ["${", "${A B}", "${}", "${A-B}"] {
            assert!(expand(text, &Vars::new()).is_err(), "{text}");
        }
    }
}
