//! Query edits a route makes on the request it forwards: remove, rename, set (replacing every
//! value the client sent), add (only when the client sent none). Parameters the edits do not
//! name keep their bytes exactly as the client wrote them: decoding and encoding them again
//! would change what a service that signs or compares its query sees (`%20` against `+`).

use std::borrow::Cow;

/// A query parameter's name as a route gives it: not empty.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ParamName(pub String);

impl ParamName {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("a query parameter needs a name".to_owned());
        }
        Ok(Self(text.to_owned()))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryEdits {
    pub remove: Vec<String>,
    pub rename: Vec<(String, String)>,
    pub set: Vec<(String, String)>,
    pub add: Vec<(String, String)>,
}

impl QueryEdits {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty()
            && self.rename.is_empty()
            && self.set.is_empty()
            && self.add.is_empty()
    }

    /// `target` (a path and query, as the route's `to` made it) with the edits applied.
    pub fn apply(&self, target: &mut String) {
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, query),
            None => (target.as_str(), ""),
        };
        let mut edited = String::with_capacity(target.len() + 32);
        edited.push_str(path);
        let mut present: Vec<Cow<'_, str>> = Vec::new();
        let push = |edited: &mut String, pair: &str| {
            edited.push(if edited.len() == path.len() { '?' } else { '&' });
            edited.push_str(pair);
        };
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (raw_name, raw_value) = match pair.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (pair, None),
            };
            let name = decoded(raw_name);
            if self.remove.iter().any(|removed| *removed == name) {
                continue;
            }
            if let Some((_, to)) = self.rename.iter().find(|(from, _)| *from == name) {
                let mut renamed = encoded(to);
                if let Some(value) = raw_value {
                    renamed.push('=');
                    renamed.push_str(value);
                }
                push(&mut edited, &renamed);
                present.push(Cow::Owned(to.clone()));
                continue;
            }
            if self.set.iter().any(|(set, _)| *set == name) {
                continue;
            }
            push(&mut edited, pair);
            present.push(name);
        }
        for (name, value) in &self.set {
            push(
                &mut edited,
                &format!("{}={}", encoded(name), encoded(value)),
            );
        }
        for (name, value) in &self.add {
            if !present.iter().any(|sent| sent == name) {
                push(
                    &mut edited,
                    &format!("{}={}", encoded(name), encoded(value)),
                );
            }
        }
        *target = edited;
    }
}

/// A parameter name as the client meant it (`%2B` and `+` decoded), to compare with a route's.
fn decoded(raw: &str) -> Cow<'_, str> {
    form_urlencoded::parse(raw.as_bytes())
        .next()
        .map_or(Cow::Borrowed(""), |(name, _)| name)
}

fn encoded(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edits() -> QueryEdits {
        let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        QueryEdits {
            remove: vec!["debug".into()],
            rename: vec![pair("q", "search")],
            set: vec![pair("tenant", "acme corp")],
            add: vec![pair("v", "2"), pair("limit", "10")],
        }
    }

    fn edited(target: &str) -> String {
        let mut target = target.to_owned();
        edits().apply(&mut target);
        target
    }

    #[test]
    fn the_edits_reach_the_query_and_the_rest_keeps_its_bytes() {
        assert_eq!(
            edited("/items?q=a%20b&debug=1&x=%2B+&limit=50&tenant=evil&tenant=worse"),
            "/items?search=a%20b&x=%2B+&limit=50&tenant=acme+corp&v=2"
        );
    }

    #[test]
    fn a_path_without_a_query_gets_only_what_is_set_and_added() {
        assert_eq!(edited("/items"), "/items?tenant=acme+corp&v=2&limit=10");
        assert_eq!(edited("/items?"), "/items?tenant=acme+corp&v=2&limit=10");
    }

    #[test]
    fn an_encoded_name_is_matched_as_the_client_meant_it() {
        assert_eq!(
            edited("/i?de%62ug=1&%71=x"),
            "/i?search=x&tenant=acme+corp&v=2&limit=10"
        );
    }

    #[test]
    fn hostile_queries_are_edited_without_harm() {
        assert_eq!(
            edited("/i?&&&=&=x&%zz=1"),
            "/i?=&=x&%zz=1&tenant=acme+corp&v=2&limit=10"
        );
        let many = "a=1&".repeat(10_000);
        let long = edited(&format!("/i?{many}"));
        assert!(long.ends_with("tenant=acme+corp&v=2&limit=10"));
    }
}
