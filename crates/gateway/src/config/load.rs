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
