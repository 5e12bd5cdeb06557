//! Limit: whether the route's rate-limit policies let this request through (429 when one does
//! not), and the headers every answer on a limited route carries
//! (draft-ietf-httpapi-ratelimit-headers-11): `RateLimit-Policy` lists the route's policies,
//! `RateLimit` gives the most restrictive one's available quota `r` and window `t`.
//!
//! Every policy of the route applies, in two decisions ([`Stage`]): `ip`/`route` before the
//! token is verified (a flood of bad tokens is counted and refused without a signature check),
//! `user`/`client` once the caller is known. Within a decision the policies are decided
//! together (see [`crate::limit`]): a request refused by one is counted by none of that
//! decision, so a client that waits its `Retry-After` (the longest wait among the refusing
//! policies) finds them willing, unless other requests spent a shared bucket (`by: ip`,
//! `by: route`) meanwhile. A request the caller policies refuse has been counted by the
//! address/route ones: they fence the route, whoever the caller is.

use std::net::IpAddr;
use std::sync::Arc;

use axum::response::Response;
use http::header::HeaderName;
use http::HeaderValue;
use kit::identity::PrincipalKind;

use crate::app::AppState;
use crate::auth::tokens::AccessClaims;
use crate::error::{GatewayError, RateLimited};
use crate::limit::{bucket_key, Limit, LimitBy, RatePolicy, Subject, Verdict};
use crate::router::Route;
use kit::listener::client_address;

pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// The rate-limit headers every answer of a counted request gets: the route's policies, and
/// the most restrictive verdict so far (its `RateLimit` item is written when the answer goes).
pub struct Quota {
    policy: HeaderValue,
    name: Arc<str>,
    verdict: Verdict,
}

impl Quota {
    /// The more restrictive of two stages' quotas (same route, so the same policy list).
    fn tighter(self, other: Option<Quota>) -> Quota {
        match other {
            Some(other) if other.verdict.more_restrictive_than(&self.verdict) => other,
            _ => self,
        }
    }
}

/// Which of a route's policies a decision takes. A request is decided twice: its `ip` and
/// `route` policies before its token is verified (so a flood of bad tokens is counted, and
/// refused by them before any signature is checked), its `user` and `client` policies once the
/// caller is known. Each decision is one atomic step over its policies; see ARCHITECTURE
/// "Rate limits" for what the split means for a refused request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `by: ip` and `by: route`: before authentication.
    BeforeAuth,
    /// `by: user` and `by: client`: after authorization.
    AfterAuth,
}

impl Stage {
    fn decides(self, by: LimitBy) -> bool {
        by.needs_caller() == (self == Self::AfterAuth)
    }
}

/// Decides the request against `route`'s policies of `stage`. Nothing when it has none; when
/// every one allows it, `quota` becomes the most restrictive so far (for the headers of
/// whatever answer follows, the gateway's own refusals included: the request was counted); a
/// 429 when one does not (that refusal carries the headers, so `quota` is emptied).
pub async fn admit(
    app: &AppState,
    route: &Route,
    stage: Stage,
    caller: Option<&AccessClaims>,
    client_ip: IpAddr,
    quota: &mut Option<Quota>,
) -> Result<(), GatewayError> {
    let Some(policy_header) = route.rate_limit_policy.as_ref() else {
        return Ok(());
    };
    let limited = Limited {
        policies: route
            .settings
            .rate_limit
            .iter()
            .filter(|policy| stage.decides(policy.by))
            .collect(),
        template: &route.template,
        policy_header,
    };
    match limited.admit(app, caller, client_ip).await {
        Ok(Some(decided)) => {
            *quota = Some(decided.tighter(quota.take()));
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(refusal) => {
            *quota = None;
            Err(refusal)
        }
    }
}

/// [`admit`] inside the request's `limit` span (recorded only on a route with policies).
pub async fn admit_traced(
    app: &AppState,
    route: &Route,
    stage: Stage,
    caller: Option<&AccessClaims>,
    client_ip: IpAddr,
    quota: &mut Option<Quota>,
    trace: &mut crate::trace::RequestTrace,
) -> Result<(), GatewayError> {
    let started = trace.start_if(route.rate_limit_policy.is_some());
    let admitted = admit(app, route, stage, caller, client_ip, quota).await;
    trace.ended("limit", started, admitted.as_ref().err());
    admitted
}

/// The same for the gateway's login (`auth.rate_limit`, `ip` or `route` policies only), counted
/// under its path; before any password is checked, so a flood of guesses costs no credential
/// check.
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
        policies: policies.iter().collect(),
        template: &config.auth.login_path,
        policy_header: &policy_header,
    };
    limited.admit(app, None, client_ip).await
}

/// Policies and where they count: a route's (one stage of them), or the login's.
struct Limited<'a> {
    policies: Vec<&'a Arc<RatePolicy>>,
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
        let (policies, policy_header) = (&self.policies, self.policy_header);
        if policies.is_empty() {
            return Ok(None);
        }
        let buckets: Vec<(String, Limit)> = policies
            .iter()
            .map(|policy| {
                let subject = subject(policy.by, caller, client_ip);
                (
                    bucket_key(&policy.name, self.template, subject),
                    policy.limit(),
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
        if decision.allowed() {
            return Ok(Some(Quota {
                policy: policy_header.clone(),
                name: Arc::clone(&policy.name),
                verdict: *verdict,
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
            limit: limit_header(&policy.name, verdict),
        })))
    }
}

/// `answer` with the rate-limit headers, when the request was counted.
pub fn annotate(mut answer: Response, quota: Option<Quota>) -> Response {
    if let Some(quota) = quota {
        let headers = answer.headers_mut();
        headers.insert(RATELIMIT, limit_header(&quota.name, &quota.verdict));
        headers.insert(RATELIMIT_POLICY, quota.policy);
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
