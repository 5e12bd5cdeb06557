//! Route policies: who may call a route once their token is verified.

use crate::config::AuthPolicy;
use crate::error::GatewayError;

use super::tokens::AccessClaims;

/// `Ok` when `claims` satisfy `policy`: any one of the roles (a person's), and every scope.
pub fn authorize(policy: &AuthPolicy, claims: &AccessClaims) -> Result<(), GatewayError> {
    match policy {
        AuthPolicy::Public | AuthPolicy::Authenticated => Ok(()),
        AuthPolicy::Require { roles, scopes } => {
            if !roles.is_empty() && !roles.iter().any(|role| claims.roles.contains(role)) {
                return Err(GatewayError::Forbidden(format!(
                    "This route requires the role: {}.",
                    roles.join(" or ")
                )));
            }
            let granted: Vec<&str> = claims.scope.split_ascii_whitespace().collect();
            if let Some(missing) = scopes.iter().find(|s| !granted.contains(&s.as_str())) {
                return Err(GatewayError::InsufficientScope(missing.clone()));
            }
            Ok(())
        }
    }
}
