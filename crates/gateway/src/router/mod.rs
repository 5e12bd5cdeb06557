//! The route table: public method + path → route, on a radix tree (matchit), so the cost of a
//! match depends on the path's length, not on the number of routes.

mod template;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use http::{HeaderValue, Method};
use kit::observe::sharded::Histogram;
use kit::observe::RouteSeries;

use crate::config::RouteSettings;
use crate::status::window::RouteWindow;
pub use template::Template;

/// A route ready to serve: its settings and its parsed upstream path.
#[derive(Debug)]
pub struct Route {
    /// Position in the configuration file, for messages and metrics.
    pub index: usize,
    /// The public path template (`/api/users/{id}`): what metrics and the access log name the
    /// route by, never the raw path, so their series are bounded by the configuration.
    pub template: Arc<str>,
    /// `settings.service`, shared: what the upstream metrics name it by.
    pub service: Arc<str>,
    pub settings: RouteSettings,
    pub to: Template,
    /// The route's metric series, kept once first recorded (see [`kit::observe::RouteSeries`]):
    /// the observe phase's common case is then atomic additions, with no label hashing.
    pub series: RouteSeries,
    /// Its service's `gatehouse_upstream_duration_seconds` series, kept the same way.
    pub upstream_duration: OnceLock<Histogram>,
    /// `RateLimit-Policy` for the route's rate limits (none without), written once here: it is
    /// the same on every answer.
    pub rate_limit_policy: Option<HeaderValue>,
    /// Its last minute for the status page, fed by the observe phase; the same window in the
    /// tables that follow while a reload keeps the route (same path, same methods).
    pub window: Arc<RouteWindow>,
}

#[derive(Debug)]
struct PathEntry {
    by_method: HashMap<Method, Arc<Route>>,
    allow: HeaderValue,
}

#[derive(Debug)]
pub struct RouteTable {
    paths: matchit::Router<usize>,
    entries: Vec<PathEntry>,
    /// Every route once, in the configuration's order (the status page lists them so).
    routes: Vec<Arc<Route>>,
}

/// What the table says about a request.
pub enum Lookup<'a> {
    Found {
        route: &'a Arc<Route>,
        params: Vec<(&'a str, &'a str)>,
    },
    /// The path exists with other methods; `allow` lists them for the 405's `Allow` header.
    MethodNotAllowed {
        allow: &'a HeaderValue,
    },
    NotFound,
}

/// Why a set of routes cannot form a table.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("routes[{index}]: {method} {path} is already routed by routes[{first}]")]
    Duplicate {
        index: usize,
        first: usize,
        method: Method,
        path: String,
    },
    #[error("routes[{index}].path: {path:?} cannot be routed: {reason}")]
    Conflict {
        index: usize,
        path: String,
        reason: String,
    },
    #[error("routes[{index}].to: {reason}")]
    Target { index: usize, reason: String },
}

impl RouteTable {
    pub fn build(routes: &[RouteSettings]) -> Result<Self, TableError> {
        Self::succeeding(routes, None)
    }

    /// The table of `routes`, each keeping the live window of the route of `previous` with the
    /// same path and methods (a reload does not blank the status page's last minute).
    pub fn succeeding(
        routes: &[RouteSettings],
        previous: Option<&RouteTable>,
    ) -> Result<Self, TableError> {
        let kept: HashMap<(&str, Vec<&str>), &Arc<RouteWindow>> = previous
            .map(|table| {
                table
                    .routes
                    .iter()
                    .map(|route| (window_key(&route.settings), &route.window))
                    .collect()
            })
            .unwrap_or_default();
        let mut table_routes = Vec::with_capacity(routes.len());
        let mut paths = matchit::Router::new();
        let mut entries: Vec<PathEntry> = Vec::new();
        let mut entry_of_path: HashMap<String, usize> = HashMap::new();
        let mut first_of: HashMap<(String, Method), usize> = HashMap::new();

        for (index, settings) in routes.iter().enumerate() {
            let to = Template::parse(&settings.to, &settings.path)
                .map_err(|reason| TableError::Target { index, reason })?;
            let route = Arc::new(Route {
                index,
                template: Arc::from(settings.path.as_str()),
                service: Arc::from(settings.service.as_str()),
                settings: settings.clone(),
                to,
                series: RouteSeries::default(),
                upstream_duration: OnceLock::new(),
                rate_limit_policy: crate::limit::policy::policy_header(&settings.rate_limit),
                window: kept
                    .get(&window_key(settings))
                    .map_or_else(Arc::default, |window| Arc::clone(window)),
            });
            table_routes.push(Arc::clone(&route));
            let key = canonical(&settings.path);
            let entry = match entry_of_path.get(&key) {
                Some(&entry) => entry,
                None => {
                    let entry = entries.len();
                    paths
                        .insert(settings.path.clone(), entry)
                        .map_err(|error| TableError::Conflict {
                            index,
                            path: settings.path.clone(),
                            reason: error.to_string(),
                        })?;
                    entries.push(PathEntry {
                        by_method: HashMap::new(),
                        allow: HeaderValue::from_static(""),
                    });
                    entry_of_path.insert(key.clone(), entry);
                    entry
                }
            };
            for method in &settings.methods {
                if let Some(&first) = first_of.get(&(key.clone(), method.clone())) {
                    return Err(TableError::Duplicate {
                        index,
                        first,
                        method: method.clone(),
                        path: settings.path.clone(),
                    });
                }
                first_of.insert((key.clone(), method.clone()), index);
                entries[entry]
                    .by_method
                    .insert(method.clone(), Arc::clone(&route));
            }
        }
        // HEAD is answered like GET wherever GET is routed and HEAD is not routed on its own.
        for entry in &mut entries {
            if let Some(get) = entry.by_method.get(&Method::GET).cloned() {
                entry.by_method.entry(Method::HEAD).or_insert(get);
            }
            let mut methods: Vec<&str> = entry.by_method.keys().map(Method::as_str).collect();
            methods.sort_unstable();
            entry.allow =
                HeaderValue::from_str(&methods.join(", ")).unwrap_or(HeaderValue::from_static(""));
        }
        Ok(Self {
            paths,
            entries,
            routes: table_routes,
        })
    }

    /// Every route once, in the configuration's order.
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    pub fn lookup<'a>(&'a self, method: &Method, path: &'a str) -> Lookup<'a> {
        let Ok(matched) = self.paths.at(path) else {
            return Lookup::NotFound;
        };
        let entry = &self.entries[*matched.value];
        match entry.by_method.get(method) {
            Some(route) => Lookup::Found {
                route,
                params: matched.params.iter().collect(),
            },
            None => Lookup::MethodNotAllowed {
                allow: &entry.allow,
            },
        }
    }
}

/// What makes a route the same route across a reload: its path as written and its methods.
fn window_key(settings: &RouteSettings) -> (&str, Vec<&str>) {
    let mut methods: Vec<&str> = settings.methods.iter().map(Method::as_str).collect();
    methods.sort_unstable();
    (settings.path.as_str(), methods)
}

/// Paths that differ only in their parameters' names are the same path.
fn canonical(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_param = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_param = true;
                out.push('{');
            }
            '}' => {
                in_param = false;
                out.push('}');
            }
            '*' if in_param => out.push('*'),
            _ if in_param => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AuthPolicy;

    fn route(path: &str, methods: &[Method], to: &str) -> RouteSettings {
        RouteSettings {
            path: path.into(),
            methods: methods.to_vec(),
            service: "users".into(),
            to: to.into(),
            auth: AuthPolicy::Public,
            timeout: None,
            rate_limit: Vec::new(),
            cache: None,
            request_checks: Default::default(),
            transform: Default::default(),
            compose: None,
            client_cert: None,
            websocket: None,
        }
    }

    #[test]
    fn a_reload_keeps_the_windows_of_the_routes_that_remain_and_no_others() {
        let before = RouteTable::build(&[
            route("/api/a", &[Method::GET], "/a"),
            route("/api/b", &[Method::GET], "/b"),
            route("/api/c", &[Method::GET], "/c"),
        ])
        .unwrap();
        let window = |table: &RouteTable, path: &str| {
            let route = table.routes().iter().find(|r| &*r.template == path);
            Arc::clone(&route.unwrap().window)
        };
        let after = RouteTable::succeeding(
            &[
                // kept (a new upstream path is still the same public route)
                route("/api/a", &[Method::GET], "/a2"),
                // its methods changed: another route
                route("/api/b", &[Method::GET, Method::POST], "/b"),
                route("/api/d", &[Method::GET], "/d"),
            ],
            Some(&before),
        )
        .unwrap();
        assert!(Arc::ptr_eq(
            &window(&before, "/api/a"),
            &window(&after, "/api/a")
        ));
        assert!(!Arc::ptr_eq(
            &window(&before, "/api/b"),
            &window(&after, "/api/b")
        ));
        let templates: Vec<&str> = after.routes().iter().map(|r| &*r.template).collect();
        assert_eq!(
            templates,
            ["/api/a", "/api/b", "/api/d"],
            "in the file's order, once each"
        );
    }

    #[test]
    fn static_segments_win_over_parameters() {
        let table = RouteTable::build(&[
            route("/api/users/{id}", &[Method::GET], "/users/{id}"),
            route("/api/users/me", &[Method::GET], "/users/me"),
        ])
        .unwrap();
        let Lookup::Found { route, .. } = table.lookup(&Method::GET, "/api/users/me") else {
            panic!()
        };
        assert_eq!(route.index, 1);
        let Lookup::Found { route, params } = table.lookup(&Method::GET, "/api/users/42") else {
            panic!()
        };
        assert_eq!(route.index, 0);
        assert_eq!(params, vec![("id", "42")]);
    }

    #[test]
    fn a_known_path_with_another_method_lists_the_allowed_ones() {
        let table = RouteTable::build(&[
            route("/a", &[Method::GET], "/a"),
            route("/a", &[Method::POST], "/a"),
        ])
        .unwrap();
        let Lookup::MethodNotAllowed { allow } = table.lookup(&Method::DELETE, "/a") else {
            panic!()
        };
        assert_eq!(allow, "GET, HEAD, POST");
        assert!(matches!(table.lookup(&Method::GET, "/b"), Lookup::NotFound));
    }

    #[test]
    fn the_same_method_and_path_twice_is_refused_naming_both() {
        let error = RouteTable::build(&[
            route("/a/{x}", &[Method::GET], "/a"),
            route("/a/{y}", &[Method::POST, Method::GET], "/a"),
        ])
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "routes[1]: GET /a/{y} is already routed by routes[0]"
        );
    }
}
