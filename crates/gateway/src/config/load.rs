//! Reading the gateway's file with the kit's loader: the parser's mistakes (syntax, types,
//! unknown fields, `${VAR}`) and the cross-value checks of [`super::validate`] are reported
//! together, so one run of `check-config` names everything wrong.

pub use kit::config::Vars;

use super::{schema, validate, ConfigError, GatewayConfig};

pub fn load_file(path: &std::path::Path, vars: &Vars) -> Result<GatewayConfig, ConfigError> {
    let text = kit::config::read(path)?;
    parse(&text, &path.display().to_string(), vars)
}

/// Parses and validates a configuration; `file` names it in errors.
pub fn parse(text: &str, file: &str, vars: &Vars) -> Result<GatewayConfig, ConfigError> {
    let (raw, mut mistakes) = kit::config::parse_collecting::<schema::File>(text, file, vars)?;
    let config = validate::validate(raw, &mut mistakes);
    mistakes
        .finish(config)
        .map_err(|mistakes| ConfigError::Mistakes {
            file: file.to_owned(),
            mistakes,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kit::config::Position;

    const SERVICES: &str = "services:\n  users: { upstreams: [\"http://127.0.0.1:8101\"] }\n";

    fn mistakes(text: &str, vars: &Vars) -> Vec<kit::config::Mistake> {
        match parse(text, "gateway.yaml", vars) {
            Err(ConfigError::Mistakes { mistakes, .. }) => mistakes,
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("{text} must be refused"),
        }
    }

    #[test]
    fn an_unknown_service_a_bad_duration_and_a_duplicate_route_are_three_mistakes_in_one_run() {
        let text = "\
services:
  users:
    upstreams: [\"http://127.0.0.1:8101\"]
    timeout: soon
routes:
  - { path: /a, methods: [GET], service: nobody, auth: public }
  - { path: /b, methods: [GET], service: users, auth: public }
  - { path: /b, methods: [GET], service: users, auth: public }
";
        let found = mistakes(text, &Vars::new());
        let placed: Vec<(&str, Option<Position>)> =
            found.iter().map(|m| (m.field.as_str(), m.at)).collect();
        let at = |line, column| Some(Position { line, column });
        assert_eq!(
            placed,
            [
                ("services.users.timeout", at(4, 14)),
                ("routes[0].service", at(6, 42)),
                ("routes[2]", at(8, 13)),
            ],
            "{found:?}"
        );
        let shown = ConfigError::Mistakes {
            file: "gateway.yaml".into(),
            mistakes: found,
        }
        .to_string();
        assert!(
            shown.contains("gateway.yaml:8:13: routes[2]: GET /b is already routed by routes[1]"),
            "{shown}"
        );
        assert_eq!(shown.lines().count(), 3, "{shown}");
    }

    #[test]
    fn a_refused_route_does_not_shift_the_index_a_later_duplicate_names() {
        let text = format!(
            "{SERVICES}routes:\n  - {{ path: /a, methods: [GET], service: nobody, auth: public }}\n  - {{ path: /b, methods: [GET], service: users, auth: public }}\n  - {{ path: /b, methods: [GET], service: users, auth: public }}\n"
        );
        let found = mistakes(&text, &Vars::new());
        assert!(
            found
                .iter()
                .any(|m| m.field == "routes[2]" && m.message.ends_with("routes[1]")),
            "{found:?}"
        );
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let vars = Vars::new()
            .set("DB_PASSWORD", "db-pa55word")
            .set("REDIS_PASSWORD", "redis-pa55word");
        let text = format!(
            "store: postgres://app:${{DB_PASSWORD}}@db/gatehouse\nstate: {{ redis: \"redis://:${{REDIS_PASSWORD}}@cache:6379\" }}\n{SERVICES}routes: []\n"
        );
        let config = parse(&text, "gateway.yaml", &vars).unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains("db-pa55word"), "{shown}");
        assert!(!shown.contains("redis-pa55word"), "{shown}");
        assert!(shown.contains("postgres://app:***@db/gatehouse"), "{shown}");
        assert_eq!(
            config.store.expose_secret(),
            "postgres://app:db-pa55word@db/gatehouse"
        );
    }

    #[test]
    fn a_variable_is_substituted_as_one_value_whatever_it_holds() {
        let hostile = "pa:ss\nroutes: [] # {x}, - y";
        let vars = Vars::new().set("DB_PASSWORD", hostile);
        let text = format!("store: postgres://app:${{DB_PASSWORD}}@db/x\n{SERVICES}routes: []\n");
        let config = parse(&text, "gateway.yaml", &vars).unwrap();
        assert_eq!(
            config.store.expose_secret(),
            format!("postgres://app:{hostile}@db/x")
        );
    }

    #[test]
    fn a_substituted_value_that_fails_its_type_names_its_variable() {
        let vars = Vars::new().set("DRAIN", "forever");
        let text = format!("drain_timeout: ${{DRAIN}}\n{SERVICES}routes: []\n");
        let found = mistakes(&text, &vars);
        assert_eq!(found[0].field, "drain_timeout");
        assert!(found[0].message.contains("${DRAIN}"), "{found:?}");
    }

    #[test]
    fn hostile_files_are_refused_with_a_place() {
        let laughs = format!(
            "a: &a [\"lol\",\"lol\",\"lol\"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a]\nc: [*b,*b,*b,*b,*b,*b,*b,*b]\n{SERVICES}routes: []\n"
        );
        let deep = format!("{SERVICES}routes: {}{}\n", "[".repeat(100), "]".repeat(100));
        let duplicate = format!("{SERVICES}routes: []\nroutes: []\n");
        let tab = format!("{SERVICES}routes: []\nlimits:\n\tmax_body: 1MiB\n");
        for (name, text, expected) in [
            ("a billion laughs", laughs.as_str(), "anchors and aliases"),
            ("deep nesting", deep.as_str(), "nested deeper"),
            ("a duplicate key", duplicate.as_str(), "given twice"),
            ("a tab", tab.as_str(), ""),
        ] {
            let found = mistakes(text, &Vars::new());
            assert!(found[0].at.is_some(), "{name}: {found:?}");
            assert!(found[0].message.contains(expected), "{name}: {found:?}");
        }
    }
}

#[cfg(test)]
mod telemetry_tests {
    use super::*;
    use kit::config::Position;

    const HEAD: &str =
        "services:\n  users: { upstreams: [\"http://127.0.0.1:8101\"] }\nroutes: []\n";

    #[test]
    fn telemetry_is_off_unless_configured_and_read_with_its_defaults() {
        let off = parse(HEAD, "gateway.yaml", &Vars::new()).unwrap();
        assert_eq!(off.telemetry, None);

        let text = format!("{HEAD}telemetry: {{ otlp_endpoint: \"http://collector:4318\" }}\n");
        let on = parse(&text, "gateway.yaml", &Vars::new()).unwrap();
        let telemetry = on.telemetry.unwrap();
        assert_eq!(
            telemetry.otlp_endpoint.traces_url(),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(telemetry.service_name, "gateway");
        assert_eq!(telemetry.sample_ratio, kit::trace::SampleRatio::ALL);
    }

    #[test]
    fn every_bad_telemetry_value_is_refused_at_its_place() {
        let cases = [
            (
                "otlp_endpoint: \"https://collector:4318\"",
                "telemetry.otlp_endpoint",
                "only http://",
            ),
            (
                "otlp_endpoint: collector:4318",
                "telemetry.otlp_endpoint",
                "http://",
            ),
            (
                "otlp_endpoint: \"http://c:4318/?x=1\"",
                "telemetry.otlp_endpoint",
                "no query",
            ),
            (
                "otlp_endpoint: \"http://u:p@c:4318\"",
                "telemetry.otlp_endpoint",
                "user information",
            ),
            (
                "otlp_endpoint: \"http://c:4318\", sample_ratio: 1.5",
                "telemetry.sample_ratio",
                "between 0 and 1",
            ),
            (
                "otlp_endpoint: \"http://c:4318\", sample_ratio: -1",
                "telemetry.sample_ratio",
                "between 0 and 1",
            ),
            (
                "otlp_endpoint: \"http://c:4318\", sample_ratio: often",
                "telemetry.sample_ratio",
                "",
            ),
            (
                "otlp_endpoint: \"http://c:4318\", service_name: \"\"",
                "telemetry.service_name",
                "",
            ),
            (
                "otlp_endpoint: \"http://c:4318\", headers: { x: y }",
                "telemetry",
                "headers",
            ),
            ("sample_ratio: 1", "telemetry", "otlp_endpoint"),
        ];
        for (section, field, says) in cases {
            let text = format!("{HEAD}telemetry: {{ {section} }}\n");
            let found = match parse(&text, "gateway.yaml", &Vars::new()) {
                Err(ConfigError::Mistakes { mistakes, .. }) => mistakes,
                Err(other) => panic!("{other}"),
                Ok(_) => panic!("{section} must be refused"),
            };
            assert_eq!(found.len(), 1, "{section}: {found:?}");
            assert!(found[0].field.starts_with(field), "{section}: {found:?}");
            assert!(found[0].message.contains(says), "{section}: {found:?}");
            assert!(
                matches!(found[0].at, Some(Position { line: 4, .. })),
                "{section}: placed on its line: {found:?}"
            );
        }
    }

    #[test]
    fn a_reload_that_changes_telemetry_needs_a_restart() {
        let running = parse(HEAD, "gateway.yaml", &Vars::new()).unwrap();
        let text = format!("{HEAD}telemetry: {{ otlp_endpoint: \"http://collector:4318\" }}\n");
        let changed = parse(&text, "gateway.yaml", &Vars::new()).unwrap();
        assert_eq!(changed.needs_restart(&running), ["telemetry"]);
        assert_eq!(
            changed.keeping_start_settings_of(&running).telemetry,
            None,
            "the running gateway keeps exporting as it started"
        );
    }
}
