//! A route's `compose:` (issue 14): either `service` or `compose`, never both or neither; a
//! composition answers GET (and HEAD) only, takes no `to`, `cache` or route `timeout`; each part
//! names a defined service, and the plan itself (cycles, unknown parts and parameters, fields
//! of optional parts) is checked by [`Plan::build`]. Every mistake is placed at its part.

use std::collections::BTreeMap;
use std::sync::Arc;

use kit::config::Mistakes;

use crate::compose::plan::{PartSpec, Plan, DEFAULT_MAX_BODY};
use crate::config::schema;
use crate::config::ServiceSettings;

/// The largest answer a part may be allowed: the parts of one request are held in memory at
/// once while the answer is put together.
pub const MAX_PART_BODY: u64 = 16 * 1024 * 1024;

/// The plan of `route` when it composes (and is sound), having named every mistake.
pub(super) fn route(
    field: &str,
    route: &schema::Route,
    services: &BTreeMap<String, ServiceSettings>,
    mistakes: &mut Mistakes,
) -> Option<Arc<Plan>> {
    let Some(compose) = &route.compose else {
        if route.service.is_none() {
            mistakes.at(
                format!("{field}.service"),
                &route.path,
                "missing: name the service the route forwards to (or its parts, with `compose`)",
            );
        }
        return None;
    };
    if let Some(service) = &route.service {
        mistakes.at(
            format!("{field}.service"),
            service,
            "a route has `service` or `compose`, not both",
        );
    }
    if let Some(to) = &route.to {
        mistakes.at(
            format!("{field}.to"),
            to,
            "a composition route has no `to`: each part has its own",
        );
    }
    if let Some(cache) = &route.cache {
        mistakes.at(
            format!("{field}.cache"),
            cache,
            "a composition's answer is not cached: cache its parts' routes instead",
        );
    }
    if route.timeout.is_some() {
        mistakes.at(
            format!("{field}.timeout"),
            compose,
            "a composition has no timeout of its own: give each part its `timeout`",
        );
    }
    let reads_only = route
        .methods
        .iter()
        .all(|method| method.0 == http::Method::GET || method.0 == http::Method::HEAD);
    if !reads_only || route.methods.is_empty() {
        mistakes.at(
            format!("{field}.methods"),
            &route.path,
            "a composition answers GET (and HEAD) only: its parts are reads, retried when they fail, and a write spread over several services could half succeed",
        );
    }
    if compose.is_empty() {
        mistakes.at(
            format!("{field}.compose"),
            compose,
            "list at least one part",
        );
        return None;
    }
    let before = mistakes.len();
    let mut specs = BTreeMap::new();
    for (name, part) in compose.iter() {
        let at = format!("{field}.compose.{name}");
        if !super::plain_name(name) {
            mistakes.at(
                &at,
                part,
                "a part name is 1 to 64 letters, digits, `-` or `_`",
            );
        }
        if !services.contains_key(part.service.as_str()) {
            mistakes.at(
                format!("{at}.service"),
                &part.service,
                super::unknown_service(&part.service, services),
            );
        }
        let max_body = part.max_body.as_ref().map_or(DEFAULT_MAX_BODY, |size| {
            if size.0 > MAX_PART_BODY {
                mistakes.at(
                    format!("{at}.max_body"),
                    size,
                    "must be at most 16MiB (every part of a request is held at once)",
                );
            }
            size.0.min(MAX_PART_BODY)
        });
        specs.insert(
            name.clone(),
            PartSpec {
                service: part.service.as_str(),
                to: part.to.as_str(),
                required: part.required,
                timeout: part.timeout.map(|t| t.0),
                max_body,
            },
        );
    }
    match Plan::build(&route.path.0, &specs) {
        Ok(plan) if mistakes.len() == before => Some(Arc::new(plan)),
        Ok(_) => None,
        Err(found) => {
            for mistake in found {
                let Some(part) = compose.get(&mistake.part) else {
                    continue;
                };
                let at = format!("{field}.compose.{}", mistake.part);
                match mistake.key {
                    Some(key) => mistakes.at(format!("{at}.{key}"), &part.to, mistake.message),
                    None => mistakes.at(at, part, mistake.message),
                }
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{parse, ConfigError, GatewayConfig, Vars};

    fn config(route: &str) -> Result<GatewayConfig, ConfigError> {
        let text = format!(
            "services:\n  users: {{ upstreams: [\"http://127.0.0.1:8101\"] }}\n  orders: {{ upstreams: [\"http://127.0.0.1:8102\"] }}\n\
             routes:\n{route}"
        );
        parse(&text, "gateway.yaml", &Vars::new())
    }

    const SUMMARY: &str = "  - path: \"/api/users/{id}/summary\"\n    methods: [GET]\n    auth: { roles: [admin] }\n    compose:\n      user:   { service: users,  to: \"/users/{id}\", required: true }\n      orders: { service: orders, to: \"/orders?user_id={id}\", required: false, timeout: 2s }\n      last:   { service: orders, to: \"/orders/{user.last_order_id}\", max_body: 64KiB }\n";

    #[test]
    fn a_composition_is_read_into_a_plan_with_its_parts_in_running_order() {
        let config = config(SUMMARY).unwrap();
        let route = &config.routes[0];
        let plan = route.compose.as_deref().expect("a plan");
        let names: Vec<&str> = plan.parts.iter().map(|p| &*p.name).collect();
        assert_eq!(names, ["orders", "user", "last"], "`last` needs `user`");
        let last = &plan.parts[2];
        assert!(last.required, "required unless the file says otherwise");
        assert_eq!(last.max_body, 64 * 1024);
        assert_eq!(
            plan.parts[0].timeout,
            Some(std::time::Duration::from_secs(2))
        );
        let services = config.routed_services();
        assert!(services.contains("users") && services.contains("orders"));
        assert!(
            !services.contains(""),
            "a composition route has no service of its own"
        );
    }

    #[test]
    fn every_composition_mistake_is_named_at_its_place_in_one_run() {
        let route = "  - path: \"/api/u/{id}\"\n    methods: [GET, POST]\n    auth: authenticated\n    service: users\n    to: /x\n    timeout: 1s\n    cache: { ttl: 1s }\n    compose:\n      a: { service: users, to: \"/a/{b.x}\" }\n      b: { service: users, to: \"/b/{a.y}\" }\n      c: { service: nowhere, to: \"/c/{nope}\" }\n      d: { service: users, to: \"/d/{ghost.x}\" }\n      e: { service: users, to: /e, required: false }\n      f: { service: users, to: \"/f/{e.x}\", max_body: 1GiB }\n      errors: { service: users, to: /g }\n  - { path: /api/none, methods: [GET], auth: public }\n";
        let error = config(route).unwrap_err().to_string();
        for expected in [
            "gateway.yaml:8:14: routes[0].service: a route has `service` or `compose`, not both",
            "routes[0].to: a composition route has no `to`",
            "routes[0].timeout",
            "routes[0].cache: a composition's answer is not cached",
            "routes[0].methods: a composition answers GET (and HEAD) only",
            "routes[0].compose.a.to: the parts a, b take fields of each other (a cycle)",
            "routes[0].compose.b.to: the parts a, b take fields of each other (a cycle)",
            "routes[0].compose.c.service: unknown service `nowhere`",
            "routes[0].compose.f.max_body: must be at most 16MiB",
            "routes[1].service: missing",
        ] {
            assert!(error.contains(expected), "{expected}\n{error}");
        }
    }

    #[test]
    fn plan_mistakes_are_reported_when_the_rest_is_sound() {
        let route = "  - path: \"/api/u/{id}\"\n    methods: [GET]\n    auth: authenticated\n    compose:\n      c: { service: users, to: \"/c/{nope}\" }\n      d: { service: users, to: \"/d/{ghost.x}\" }\n      e: { service: users, to: /e, required: false }\n      f: { service: users, to: \"/f/{e.x}\" }\n      errors: { service: users, to: /g }\n";
        let error = config(route).unwrap_err().to_string();
        for expected in [
            "routes[0].compose.c.to: \"/c/{nope}\" uses `{nope}`, which the route's path",
            "routes[0].compose.d.to: \"/d/{ghost.x}\" uses a field of `ghost`, which is no part",
            "routes[0].compose.f.to: \"/f/{e.x}\" uses a field of `e`, which is optional",
            "routes[0].compose.errors: a part may not be named `errors` or `query`",
        ] {
            assert!(error.contains(expected), "{expected}\n{error}");
        }
    }
}
