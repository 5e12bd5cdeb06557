//! Which of a service's paths a route exposes, and under which public path: the route's `to`
//! template is matched against the service's path templates segment by segment, so a route
//! whose `to` names its parameters differently (`/api/u/{uid}` → `/users/{uid}` against the
//! service's `/users/{id}`) still maps right, and a literal in `to` (`/users/me`) exposes only
//! the service path that has it, never the parameter path beside it.

/// A service path as a route exposes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exposed {
    /// The public path, with the route's parameter names (`/api/users/{uid}`).
    pub public: String,
    /// Service path parameter → public parameter, for each one the route passes on.
    pub renamed: Vec<(String, String)>,
    /// Service path parameters `to` fills with a literal: the client does not send them.
    pub fixed: Vec<String>,
    /// Public path parameters the service path does not take (the route matches them, then
    /// drops them): documented as plain strings.
    pub unused: Vec<String>,
}

/// One segment of a path template.
#[derive(Debug, PartialEq, Eq)]
enum Segment<'a> {
    Literal(&'a str),
    /// `{name}`
    Param(&'a str),
    /// `{*name}`: the rest of the path (only in a route's public path, last).
    Rest(&'a str),
}

fn segments(template: &str) -> Vec<Segment<'_>> {
    template
        .trim_start_matches('/')
        .split('/')
        .map(
            |segment| match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) if !name.contains(['{', '}']) => match name.strip_prefix('*') {
                    Some(rest) => Segment::Rest(rest),
                    None => Segment::Param(name),
                },
                _ => Segment::Literal(segment),
            },
        )
        .collect()
}

/// The names of the `{name}` and `{*name}` parameters of `template`.
fn parameters(template: &str) -> Vec<&str> {
    segments(template)
        .into_iter()
        .filter_map(|segment| match segment {
            Segment::Param(name) | Segment::Rest(name) => Some(name),
            Segment::Literal(_) => None,
        })
        .collect()
}

/// How the route `path` → `to` exposes the service path `service_path`, or `None` when it does
/// not reach it. A `to` parameter that the public path declares as `{*rest}` takes the rest of
/// the service path, whatever its length (one segment at least, as the router requires).
pub fn expose(path: &str, to: &str, service_path: &str) -> Option<Exposed> {
    let rest_names: Vec<&str> = segments(path)
        .into_iter()
        .filter_map(|segment| match segment {
            Segment::Rest(name) => Some(name),
            _ => None,
        })
        .collect();
    let to_segments = segments(to);
    let service_segments = segments(service_path);
    let mut renamed = Vec::new();
    let mut fixed = Vec::new();
    // The public value of each `to` parameter: the service's `{name}` for a passed-on
    // parameter, the service's remaining segments for the rest.
    let mut values: Vec<(&str, String)> = Vec::new();
    let mut index = 0;
    for (position, segment) in to_segments.iter().enumerate() {
        match segment {
            Segment::Param(name) | Segment::Rest(name) if rest_names.contains(name) => {
                // The rest of the path, last in `to`.
                if position + 1 != to_segments.len() || index >= service_segments.len() {
                    return None;
                }
                let tail: Vec<String> = service_segments[index..]
                    .iter()
                    .map(|segment| match segment {
                        Segment::Literal(text) => (*text).to_owned(),
                        Segment::Param(name) | Segment::Rest(name) => format!("{{{name}}}"),
                    })
                    .collect();
                values.push((name, tail.join("/")));
                index = service_segments.len();
            }
            Segment::Param(name) => match service_segments.get(index)? {
                Segment::Param(theirs) => {
                    renamed.push(((*theirs).to_owned(), (*name).to_owned()));
                    values.push((name, format!("{{{name}}}")));
                    index += 1;
                }
                _ => return None,
            },
            Segment::Literal(text) => match service_segments.get(index)? {
                Segment::Literal(theirs) if theirs == text => index += 1,
                Segment::Param(theirs) if !text.is_empty() => {
                    fixed.push((*theirs).to_owned());
                    index += 1;
                }
                _ => return None,
            },
            Segment::Rest(_) => return None,
        }
    }
    if index != service_segments.len() {
        return None;
    }
    let mut unused = Vec::new();
    let public: Vec<String> = segments(path)
        .into_iter()
        .map(|segment| match segment {
            Segment::Literal(text) => text.to_owned(),
            Segment::Param(name) | Segment::Rest(name) => {
                match values.iter().find(|(used, _)| *used == name) {
                    Some((_, value)) if rest_names.contains(&name) => value.clone(),
                    Some(_) => format!("{{{name}}}"),
                    None => {
                        unused.push(name.to_owned());
                        format!("{{{name}}}")
                    }
                }
            }
        })
        .collect();
    Some(Exposed {
        public: format!("/{}", public.join("/")),
        renamed,
        fixed,
        unused,
    })
}

/// Each service path the route `path` → `to` exposes, with how. Where several fall under one
/// public path (a `to` of `/users/me` reaches both the service's `/users/me` and, filling `id`,
/// its `/users/{id}`), only the one the service routes such a request to is kept: the other's
/// operations are not what a client of that public path gets.
pub fn exposed_by<'a>(
    path: &str,
    to: &str,
    service_paths: impl Iterator<Item = &'a str>,
) -> Vec<(&'a str, Exposed)> {
    let mut chosen: Vec<(&'a str, Exposed)> = Vec::new();
    for service_path in service_paths {
        let Some(exposed) = expose(path, to, service_path) else {
            continue;
        };
        match chosen
            .iter_mut()
            .find(|(_, earlier)| earlier.public == exposed.public)
        {
            Some(slot) if precedence(service_path) > precedence(slot.0) => {
                *slot = (service_path, exposed);
            }
            Some(_) => {}
            None => chosen.push((service_path, exposed)),
        }
    }
    chosen
}

/// How a service's router ranks two templates that both match a request, as axum's (matchit)
/// does: at the first segment where they differ, a literal wins over a parameter. The greater
/// value wins.
fn precedence(template: &str) -> Vec<bool> {
    segments(template)
        .iter()
        .map(|segment| matches!(segment, Segment::Literal(_)))
        .collect()
}

/// The service path template `target` (a request's path on the service, no query) falls under:
/// when several do, the one the service's router picks (`/users/me` over `/users/{id}`).
pub fn template_of<'a>(templates: impl Iterator<Item = &'a str>, target: &str) -> Option<&'a str> {
    let wanted: Vec<&str> = target.trim_start_matches('/').split('/').collect();
    templates
        .filter(|template| {
            let template_segments = segments(template);
            template_segments.len() == wanted.len()
                && template_segments
                    .iter()
                    .zip(&wanted)
                    .all(|(segment, value)| match segment {
                        Segment::Literal(text) => text == value,
                        Segment::Param(_) => !value.is_empty(),
                        Segment::Rest(_) => false,
                    })
        })
        .max_by_key(|template| precedence(template))
}

/// The public path parameters a route's path declares, in order.
pub fn public_parameters(path: &str) -> Vec<&str> {
    parameters(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parameter_named_differently_by_the_route_is_renamed_to_the_public_name() {
        let exposed = expose("/api/u/{uid}", "/users/{uid}", "/users/{id}").unwrap();
        assert_eq!(exposed.public, "/api/u/{uid}");
        assert_eq!(exposed.renamed, vec![("id".to_owned(), "uid".to_owned())]);
        assert!(exposed.fixed.is_empty() && exposed.unused.is_empty());
    }

    #[test]
    fn a_literal_in_to_reaches_only_the_service_path_with_it_or_fills_a_parameter() {
        assert_eq!(
            expose("/api/users/me", "/users/me", "/users/me")
                .unwrap()
                .public,
            "/api/users/me"
        );
        assert!(expose("/api/users/{id}", "/users/{id}", "/users/me").is_none());
        let fixed = expose("/api/me", "/users/me", "/users/{id}").unwrap();
        assert_eq!(fixed.public, "/api/me");
        assert_eq!(fixed.fixed, vec!["id".to_owned()]);
    }

    #[test]
    fn a_literal_in_to_exposes_the_service_path_the_service_routes_it_to_not_the_parameter_one() {
        let service_paths = ["/users", "/users/me", "/users/{id}", "/users/{id}/roles"];
        let reached = |path, to| -> Vec<(&str, String)> {
            exposed_by(path, to, service_paths.into_iter())
                .into_iter()
                .map(|(service_path, exposed)| (service_path, exposed.public))
                .collect()
        };
        assert_eq!(
            reached("/api/users/me", "/users/me"),
            [("/users/me", "/api/users/me".to_owned())],
            "the service answers /users/me itself, whichever path its document lists first"
        );
        assert_eq!(
            reached("/api/users/{id}", "/users/{id}"),
            [("/users/{id}", "/api/users/{id}".to_owned())]
        );
        assert_eq!(
            reached("/api/admin", "/users/admin"),
            [("/users/{id}", "/api/admin".to_owned())],
            "no literal path for it: the parameter path answers"
        );
    }

    #[test]
    fn at_the_first_differing_segment_a_literal_wins_as_in_the_services_router() {
        let templates = ["/a/{x}/c", "/a/b/{y}"];
        assert_eq!(
            template_of(templates.into_iter(), "/a/b/c"),
            Some("/a/b/{y}")
        );
        assert_eq!(
            exposed_by("/api/abc", "/a/b/c", templates.into_iter())
                .into_iter()
                .map(|(service_path, _)| service_path)
                .collect::<Vec<_>>(),
            ["/a/b/{y}"]
        );
    }

    #[test]
    fn a_rest_parameter_exposes_every_service_path_under_it() {
        let exposed = expose("/api/files/{*rest}", "/files/{rest}", "/files/{id}/meta").unwrap();
        assert_eq!(exposed.public, "/api/files/{id}/meta");
        assert!(expose("/api/files/{*rest}", "/files/{rest}", "/files").is_none());
        assert!(expose("/api/files/{*rest}", "/files/{rest}", "/other/x").is_none());
    }

    #[test]
    fn paths_of_other_lengths_or_literals_are_not_exposed() {
        assert!(expose("/api/orders", "/orders", "/orders/{id}").is_none());
        assert!(expose("/api/orders/{id}", "/orders/{id}", "/orders").is_none());
        assert!(expose("/api/x", "/internal/x", "/internal/y").is_none());
    }

    #[test]
    fn a_public_parameter_the_service_does_not_take_is_still_declared() {
        let exposed = expose("/api/{tenant}/time", "/time", "/time").unwrap();
        assert_eq!(exposed.unused, vec!["tenant".to_owned()]);
    }

    #[test]
    fn a_request_falls_under_the_most_literal_template() {
        let templates = ["/users/{id}", "/users/me", "/users"];
        assert_eq!(
            template_of(templates.into_iter(), "/users/me"),
            Some("/users/me")
        );
        assert_eq!(
            template_of(templates.into_iter(), "/users/42"),
            Some("/users/{id}")
        );
        assert_eq!(template_of(templates.into_iter(), "/orders"), None);
    }
}
