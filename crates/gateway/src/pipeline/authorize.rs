//! Authorize: may this caller call this route (its roles and scopes, by the route's policy).

use crate::auth::policy;
use crate::auth::tokens::AccessClaims;
use crate::error::GatewayError;
use crate::router::Route;

/// `Ok` when `caller` satisfies `route`'s policy; a public route has no caller to check.
pub fn check(route: &Route, caller: Option<&AccessClaims>) -> Result<(), GatewayError> {
    match caller {
        Some(claims) => policy::authorize(&route.settings.auth, claims),
        None => Ok(()),
    }
}
