//! The upstream path of a route: literal text and the public path's parameters.

/// A parsed `to:` such as `/users/{id}`; rendering it costs one allocation.
#[derive(Debug, Clone)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone)]
enum Part {
    Literal(String),
    Param(String),
}

impl Template {
    /// Parses `to`, checking that each parameter it uses is one of `path`'s.
    pub fn parse(to: &str, path: &str) -> Result<Self, String> {
        if !to.starts_with('/') {
            return Err(format!("{to:?} must start with `/`"));
        }
        let mut parts = Vec::new();
        let mut rest = to;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_owned()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("{to:?} has an unclosed `{{`"))?
                + open;
            let name = rest[open + 1..close].trim_start_matches('*');
            let declared =
                path.contains(&format!("{{{name}}}")) || path.contains(&format!("{{*{name}}}"));
            if name.is_empty() || !declared {
                return Err(format!(
                    "{to:?} uses `{{{name}}}`, which the route's path {path:?} does not define"
                ));
            }
            parts.push(Part::Param(name.to_owned()));
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    /// The upstream path for the matched `params`; values are inserted as they came, still
    /// percent-encoded, so an encoded `/` stays inside its segment.
    pub fn render(&self, params: &[(&str, &str)]) -> String {
        let mut out = String::with_capacity(64);
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Param(name) => {
                    if let Some((_, value)) = params.iter().find(|(n, _)| n == name) {
                        out.push_str(value);
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_carried_to_the_upstream_path() {
        let template = Template::parse("/users/{id}/x", "/api/users/{id}").unwrap();
        assert_eq!(template.render(&[("id", "7")]), "/users/7/x");
        let rest = Template::parse("/files/{rest}", "/api/files/{*rest}").unwrap();
        assert_eq!(rest.render(&[("rest", "a/b")]), "/files/a/b");
    }

    #[test]
    fn an_undefined_parameter_is_refused() {
        assert!(Template::parse("/users/{uid}", "/api/users/{id}").is_err());
        assert!(Template::parse("users", "/users").is_err());
    }
}
