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
