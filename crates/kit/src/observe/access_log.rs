//! The access log: one JSON line per request, written off the request's task.

use std::path::PathBuf;

/// Where access-log lines go: `stdout` (the default), `stderr`, `off`, or a file path (appended
/// to, created 0600 if missing).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AccessLogTarget {
    Off,
    #[default]
    Stdout,
    Stderr,
    File(PathBuf),
}

impl std::str::FromStr for AccessLogTarget {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.trim() {
            "" => {
                Err("an access log target is `stdout`, `stderr`, `off` or a file path".to_owned())
            }
            "off" => Ok(Self::Off),
            "stdout" => Ok(Self::Stdout),
            "stderr" => Ok(Self::Stderr),
            path => Ok(Self::File(PathBuf::from(path))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::AccessLogTarget;

    #[test]
    fn targets_read_by_name_and_anything_else_is_a_file() {
        assert_eq!("off".parse(), Ok(AccessLogTarget::Off));
        assert_eq!("stdout".parse(), Ok(AccessLogTarget::Stdout));
        assert_eq!(" stderr ".parse(), Ok(AccessLogTarget::Stderr));
        assert_eq!(
            "/var/log/gatehouse/access.log".parse(),
            Ok(AccessLogTarget::File(
                "/var/log/gatehouse/access.log".into()
            ))
        );
        assert!("  ".parse::<AccessLogTarget>().is_err());
    }
}
