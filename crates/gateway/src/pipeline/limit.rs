//! Limit: whether the route's rate-limit policies let this request through (429 when one does
//! not), and the headers every answer on a limited route carries
//! (draft-ietf-httpapi-ratelimit-headers-11): `RateLimit-Policy` lists the route's policies,
//! `RateLimit` gives the most restrictive one's available quota `r` and window `t`.
//!
//! Every policy of the route applies, decided together (see [`crate::limit`]): a request
//! refused by one is counted by none, so a client that waits its `Retry-After` (the longest wait
//! among the refusing policies) finds every policy willing, unless other requests spent a
//! shared bucket (`by: ip`, `by: route`) meanwhile.

use std::net::IpAddr;

use axum::response::Response;
use http::header::HeaderName;
use http::HeaderValue;
use kit::identity::PrincipalKind;

use crate::app::AppState;
use crate::auth::tokens::AccessClaims;
use crate::error::{GatewayError, RateLimited};
use crate::limit::{bucket_key, LimitBy, Rate, Subject, Verdict};
use crate::router::Route;
use kit::listener::client_address;

pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// The rate-limit headers an allowed request's answer gets.
pub struct Quota {
    policy: HeaderValue,
    limit: HeaderValue,
}

/// Decides the request against `route`'s policies: `None` when it has none, the headers for
/// the answer when every policy allows it, 429 when one does not.
pub async fn admit(
    app: &AppState,
    route: &Route,
    caller: Option<&AccessClaims>,
    client_ip: IpAddr,
) -> Result<Option<Quota>, GatewayError> {
    let Some(policy_header) = route.rate_limit_policy.as_ref() else {
        return Ok(None);
    };
    let limited = Limited {
        policies: &route.settings.rate_limit,
        template: &route.template,
        policy_header,
    };
    limited.admit(app, caller, client_ip).await
}

/// The same for the gateway's login (`auth.rate_limit`), counted under its path; before any
/// password is checked, so a flood of guesses costs no credential check.
pub async fn admit_login(
    app: &AppState,
    config: &crate::config::GatewayConfig,
    client_ip: IpAddr,
) -> Result<Option<Quota>, GatewayError> {
    let policies = &config.auth.login_rate_limit;
    let Some(policy_header) = crate::limit::policy::policy_header(policies) else {
        return Ok(None);
    };
    let limited = Limited {
        policies,
        template: &config.auth.login_path,
        policy_header: &policy_header,
    };
    limited.admit(app, None, client_ip).await
}

/// Policies and where they count: a route's, or the login's.
struct Limited<'a> {
    policies: &'a [std::sync::Arc<crate::limit::RatePolicy>],
    template: &'a str,
    policy_header: &'a HeaderValue,
}

impl Limited<'_> {
    async fn admit(
        &self,
        app: &AppState,
        caller: Option<&AccessClaims>,
        client_ip: IpAddr,
    ) -> Result<Option<Quota>, GatewayError> {
        let (policies, policy_header) = (self.policies, self.policy_header);
        let buckets: Vec<(String, Rate)> = policies
            .iter()
            .map(|policy| {
                let subject = subject(policy.by, caller, client_ip);
                (
                    bucket_key(&policy.name, self.template, subject),
                    policy.rate(),
                )
            })
            .collect();
        let decision = app.limiter.decide(&app.shared, &buckets).await;
        let mut most = 0;
        for (index, verdict) in decision.verdicts.iter().enumerate() {
            if verdict.more_restrictive_than(&decision.verdicts[most]) {
                most = index;
            }
        }
        let (Some(policy), Some(verdict)) = (policies.get(most), decision.verdicts.get(most))
        else {
            return Ok(None);
        };
        let limit = limit_header(&policy.name, verdict);
        if decision.allowed() {
            return Ok(Some(Quota {
                policy: policy_header.clone(),
                limit,
            }));
        }
        let refused = || {
            policies
                .iter()
                .zip(&decision.verdicts)
                .filter(|(_, verdict)| !verdict.allowed)
        };
        Err(GatewayError::RateLimited(Box::new(RateLimited {
            violated: refused()
                .map(|(policy, _)| policy.name.to_string())
                .collect(),
            retry_after_secs: refused()
                .map(|(_, verdict)| verdict.window_secs())
                .max()
                .unwrap_or(1)
                .max(1),
            policy: policy_header.clone(),
            limit,
        })))
    }
}

/// `answer` with the rate-limit headers, when the route has policies.
pub fn annotate(mut answer: Response, quota: Option<Quota>) -> Response {
    if let Some(quota) = quota {
        let headers = answer.headers_mut();
        headers.insert(RATELIMIT_POLICY, quota.policy);
        headers.insert(RATELIMIT, quota.limit);
    }
    answer
}

/// Whom the request counts as for a policy counting `by`. A policy that counts callers is
/// refused on public routes by validation; were one to meet no caller, it counts the address.
fn subject(by: LimitBy, caller: Option<&AccessClaims>, client_ip: IpAddr) -> Subject<'_> {
    match (by, caller) {
        (LimitBy::Route, _) => Subject::Route,
        (LimitBy::User | LimitBy::Client, Some(claims)) => match claims.kind {
            PrincipalKind::User => Subject::User(&claims.sub),
            PrincipalKind::Client | PrincipalKind::Gateway => Subject::Client(&claims.sub),
        },
        (LimitBy::Ip, _) | (LimitBy::User | LimitBy::Client, None) => {
            Subject::Ip(client_address(client_ip))
        }
    }
}

/// `"name";r=remaining;t=seconds`.
fn limit_header(name: &str, verdict: &Verdict) -> HeaderValue {
    let text = format!(
        "\"{name}\";r={};t={}",
        verdict.remaining,
        verdict.window_secs()
    );
    // Policy names are letters, digits, `-` and `_`.
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("\"\";r=0"))
}
