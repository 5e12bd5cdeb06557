//! Running a composition: every part whose fields are at hand starts at once, the others as
//! soon as the parts they need have answered; each goes through the proxy like any forwarded
//! request (instances, balancing, breaker, its service's retries for a GET) with its own
//! deadline, covering its answer's body too, and its own identity token. A required part that
//! fails ends the composition there: the parts still running are dropped (their connections
//! closed), since nothing they answer could change the outcome.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use futures_util::stream::{FuturesUnordered, StreamExt};
use http::header::{self, HeaderMap};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::Value;
use tokio::time::Instant;

use super::plan::{Part, Plan};
use super::PartFailure;
use crate::app::AppState;
use crate::auth::tokens::AccessClaims;
use crate::error::GatewayError;
use crate::pipeline::observe::ServiceLabels;
use crate::proxy::forward::{self, Attempted, Outbound};
use crate::routing::Routing;
use crate::trace::{RequestTrace, Started};
use kit::trace::{SpanId, Trace};

/// What the parts are asked with: the client's request as far as the parts may see it.
pub struct Call<'a> {
    /// The route's path parameters, as the client sent them.
    pub params: Vec<(&'a str, &'a str)>,
    /// The client's query string.
    pub query: Option<&'a str>,
    /// The headers every part gets (forwarding headers, request id, language); each part adds
    /// its own identity token.
    pub headers: HeaderMap,
    pub caller: Option<&'a AccessClaims>,
}

/// A required part failed: its index in the plan, and why.
pub struct RequiredFailed {
    pub part: usize,
    pub failure: PartFailure,
}

/// Every part's answer or failure, in the plan's order; or the first required part that failed.
pub async fn run(
    app: &AppState,
    routing: &Routing,
    plan: &Plan,
    call: &Call<'_>,
    trace: &mut RequestTrace,
) -> Result<Vec<Result<Value, PartFailure>>, RequiredFailed> {
    // Each part's `traceparent` names a span of its own (see `crate::trace`).
    let context = trace.trace().cloned();
    let count = plan.parts.len();
    let mut answers: Vec<Option<Value>> = vec![None; count];
    let mut outcomes: Vec<Option<Result<(), PartFailure>>> = vec![None; count];
    let mut started = vec![false; count];
    let mut running = FuturesUnordered::new();
    loop {
        // Start every part whose needs are met; a part whose need failed fails with it.
        for (index, part) in plan.parts.iter().enumerate() {
            if started[index] {
                continue;
            }
            if let Some(failed) = part
                .needs
                .iter()
                .find(|&&need| matches!(outcomes[need], Some(Err(_))))
            {
                started[index] = true;
                let failure = PartFailure::dependency_failed(&plan.parts[*failed].name);
                settle(plan, index, Err(failure), &mut answers, &mut outcomes)?;
                continue;
            }
            if part.needs.iter().all(|&need| answers[need].is_some()) {
                started[index] = true;
                let target = part
                    .to
                    .render(&call.params, call.query, &answers, &|i| {
                        Arc::clone(&plan.parts[i].name)
                    })
                    .map_err(|unfilled| PartFailure::unfilled(&part.service, unfilled.0));
                let traced = Traced {
                    trace: context.as_ref(),
                    span: trace.call_span(),
                    started: trace.start(),
                };
                running.push(ask_indexed(app, routing, part, index, target, call, traced));
            }
        }
        let Some((index, outcome, traced, report)) = running.next().await else {
            break;
        };
        let part = &plan.parts[index];
        trace.called(crate::trace::Call {
            started: traced.started,
            span: traced.span,
            service: &part.service,
            part: Some(&part.name),
            attempted: &report.attempted,
            outcome: match (&outcome, report.status) {
                (Err(failure), _) => Err(failure.reason),
                (Ok(_), Some(status)) => Ok(status),
                (Ok(_), None) => Ok(StatusCode::OK),
            },
        });
        settle(plan, index, outcome, &mut answers, &mut outcomes)?;
    }
    Ok(answers
        .into_iter()
        .zip(outcomes)
        .map(|(answer, outcome)| match outcome {
            Some(Err(failure)) => Err(failure),
            _ => Ok(answer.unwrap_or(Value::Null)),
        })
        .collect())
}

/// Records a part's outcome; a required part's failure ends the composition.
fn settle(
    plan: &Plan,
    index: usize,
    outcome: Result<Value, PartFailure>,
    answers: &mut [Option<Value>],
    outcomes: &mut [Option<Result<(), PartFailure>>],
) -> Result<(), RequiredFailed> {
    match outcome {
        Ok(value) => {
            answers[index] = Some(value);
            outcomes[index] = Some(Ok(()));
        }
        Err(failure) if plan.parts[index].required => {
            return Err(RequiredFailed {
                part: index,
                failure,
            })
        }
        Err(failure) => outcomes[index] = Some(Err(failure)),
    }
    Ok(())
}

/// A part's place in the trace: the span its `traceparent` names, and when it started.
struct Traced<'a> {
    trace: Option<&'a Trace>,
    span: SpanId,
    started: Started,
}

/// What a part's span records of its call.
#[derive(Default)]
struct Report {
    attempted: Attempted,
    /// The service's status, when it answered.
    status: Option<StatusCode>,
}

async fn ask_indexed<'a>(
    app: &AppState,
    routing: &Routing,
    part: &Part,
    index: usize,
    target: Result<String, PartFailure>,
    call: &Call<'_>,
    traced: Traced<'a>,
) -> (usize, Result<Value, PartFailure>, Traced<'a>, Report) {
    let mut report = Report::default();
    let outcome = match target {
        Ok(target) => ask(app, routing, part, target, call, &traced, &mut report).await,
        Err(failure) => Err(failure),
    };
    (index, outcome, traced, report)
}

/// One part: a GET to its service, its answer read whole (bounded) and parsed as JSON.
async fn ask(
    app: &AppState,
    routing: &Routing,
    part: &Part,
    target: String,
    call: &Call<'_>,
    traced: &Traced<'_>,
    report: &mut Report,
) -> Result<Value, PartFailure> {
    let upstream = routing.upstreams.get(&part.service).ok_or_else(|| {
        PartFailure::from_error(&GatewayError::Internal(anyhow::anyhow!(
            "no upstream for service {}",
            part.service
        )))
    })?;
    let mut headers = call.headers.clone();
    if let Some(claims) = call.caller {
        let identity = app
            .auth
            .identities
            .for_caller(claims, &upstream.name)
            .map_err(|error| PartFailure::from_error(&error))?;
        headers.insert(kit::identity::HEADER, identity);
    }
    if let Some(trace) = traced.trace {
        trace.propagate(&mut headers, traced.span);
    }
    let timeout = part.timeout.unwrap_or(upstream.timeout);
    let deadline = Instant::now() + timeout;
    let outbound = Outbound {
        method: Method::GET,
        target,
        headers,
        body: Body::empty(),
    };
    let attempted = &mut report.attempted;
    let limits = &routing.config.limits;
    let answered = forward::forward(upstream, outbound, timeout, limits, attempted).await;
    record(app, &upstream.name, attempted);
    let response = answered.map_err(|error| PartFailure::from_error(&error))?;
    let (head, body) = response.into_parts();
    report.status = Some(head.status);
    let service = &*part.service;
    if !head.status.is_success() {
        return Err(PartFailure::status(service, head.status));
    }
    if !is_json(&head.headers) {
        return Err(PartFailure::bad_answer(
            service,
            "part_not_json",
            "its answer is not JSON (Content-Type)",
        ));
    }
    let declared = head
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > part.max_body) {
        return Err(PartFailure::too_large(service, part.max_body));
    }
    let limit = usize::try_from(part.max_body).unwrap_or(usize::MAX);
    let bytes = match tokio::time::timeout_at(deadline, Limited::new(body, limit).collect()).await {
        Err(_elapsed) => {
            return Err(PartFailure::from_error(&GatewayError::Timeout {
                service: service.to_owned(),
            }))
        }
        Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(PartFailure::too_large(service, part.max_body))
        }
        Ok(Err(_broken)) => {
            return Err(PartFailure::from_error(&GatewayError::BadGateway {
                service: service.to_owned(),
            }))
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    serde_json::from_slice(&bytes).map_err(|_| {
        PartFailure::bad_answer(service, "part_not_json", "its answer is not valid JSON")
    })
}

/// `application/json` or any `+json` type, as body validation reads it.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(crate::openapi::body::is_json)
}

/// The part's upstream time and retries, by its service, as a forwarded request's are.
fn record(app: &AppState, service: &Arc<str>, attempted: &Attempted) {
    let labels = ServiceLabels {
        service: Arc::clone(service),
    };
    let gateway = &app.observe.gateway;
    if let Some(took) = attempted.upstream {
        gateway
            .upstream_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }
    if attempted.retries > 0 {
        gateway
            .retries
            .get_or_create(&labels)
            .inc_by(u64::from(attempted.retries));
    }
}

impl PartFailure {
    /// A failure the proxy named (503 unreachable or breaker, 504 timeout, 502 broken answer).
    pub fn from_error(error: &GatewayError) -> Self {
        let retry_after = match error {
            GatewayError::Unavailable { retry_after, .. } => Some(*retry_after),
            _ => None,
        };
        Self {
            status: error.status(),
            reason: error.reason(),
            detail: error.to_string(),
            retry_after,
        }
    }

    /// The service answered, but not with success: its own 503 stays a 503, the rest is 502.
    fn status(service: &str, status: StatusCode) -> Self {
        let (ours, reason) = if status == StatusCode::SERVICE_UNAVAILABLE {
            (StatusCode::SERVICE_UNAVAILABLE, "upstream_unavailable")
        } else {
            (StatusCode::BAD_GATEWAY, "part_status")
        };
        Self {
            status: ours,
            reason,
            detail: format!("the service `{service}` answered {}", status.as_u16()),
            retry_after: (ours == StatusCode::SERVICE_UNAVAILABLE)
                .then_some(Duration::from_secs(1)),
        }
    }

    fn bad_answer(service: &str, reason: &'static str, why: &str) -> Self {
        Self {
            status: StatusCode::BAD_GATEWAY,
            reason,
            detail: format!("the service `{service}` answered, but {why}"),
            retry_after: None,
        }
    }

    fn too_large(service: &str, limit: u64) -> Self {
        Self {
            status: StatusCode::BAD_GATEWAY,
            reason: "part_too_large",
            detail: format!("the service `{service}` answered more than {limit} bytes"),
            retry_after: None,
        }
    }

    /// The part's target could not be filled in from what the earlier parts answered.
    fn unfilled(service: &str, why: String) -> Self {
        Self {
            status: StatusCode::BAD_GATEWAY,
            reason: "part_field_unusable",
            detail: format!("`{service}` was not asked: {why}"),
            retry_after: None,
        }
    }

    fn dependency_failed(needed: &str) -> Self {
        Self {
            status: StatusCode::BAD_GATEWAY,
            reason: "dependency_failed",
            detail: format!("not asked: the part `{needed}`, whose field it needs, failed"),
            retry_after: None,
        }
    }
}
