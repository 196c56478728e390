//! HTTP routes the manifest maps to plugins: matched by method and path,
//! authenticated (a user's JWT, the API token, or nothing, per route), held
//! to the caller's rates ([`CallerRates`]), then handed to the plugin's
//! `on-http`. Anything no route matches goes to the
//! static files, if any, else gets a JSON 404.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::LengthLimitError;
use tower_http::services::ServeDir;

use super::ApiError;
use super::caller_rates::{Caller, CallerMeter, CallerRates};
use super::token::{ApiToken, check_api_token};
use crate::bindings::exports::switchboard::plugin::http_handler;
use crate::cluster::StateError;
use crate::identity::{IdentityError, Verifier, bearer_token};
use crate::listener::ClientAddress;
use crate::manifest::RouteAuth;
use crate::metrics;
use crate::runtime::{CallError, Meter, PluginSlot};

struct Target {
    slot: Arc<PluginSlot>,
    auth: RouteAuth,
    /// Its plugin's, shared by the plugin's routes.
    rates: Arc<CallerRates>,
}

/// Every plugin route, per method.
#[derive(Default)]
pub struct PluginRoutes {
    methods: HashMap<String, matchit::Router<Target>>,
}

impl PluginRoutes {
    /// The manifest has already refused conflicting routes. Each caller's
    /// allowance starts afresh.
    pub fn new<'a>(slots: impl IntoIterator<Item = &'a Arc<PluginSlot>>) -> Self {
        let mut methods: HashMap<String, matchit::Router<Target>> = HashMap::new();
        for slot in slots {
            let rates = Arc::new(CallerRates::new(slot.spec.limits.route_rate));
            for route in &slot.spec.routes {
                let target = Target {
                    slot: slot.clone(),
                    auth: route.auth,
                    rates: rates.clone(),
                };
                let router = methods.entry(route.method.clone()).or_default();
                if let Err(conflict) = router.insert(route.path.clone(), target) {
                    tracing::warn!(plugin = %slot.spec.name, "route {} {} not served: {conflict}", route.method, route.path);
                }
            }
        }
        Self { methods }
    }
}

/// What serving plugin routes needs; the routes change with the manifest.
pub struct PluginHttp {
    pub routes: ArcSwap<PluginRoutes>,
    pub verifier: Option<Arc<Verifier>>,
    pub api_token: Option<Arc<ApiToken>>,
    pub max_body_bytes: usize,
    pub static_files: Option<ServeDir>,
}

/// The fallback of the HTTP router.
pub async fn serve(http: Arc<PluginHttp>, request: Request) -> Response {
    let routes = http.routes.load();
    let method = request.method().as_str().to_owned();
    let path = request.uri().path().to_owned();
    let found = routes
        .methods
        .get(&method)
        .and_then(|router| router.at(&path).ok());
    let Some(found) = found else {
        return no_route(&http, &routes, request, &path).await;
    };
    let params = found
        .params
        .iter()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    let target = found.value;
    match http.call(target, request, params).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn no_route(
    http: &PluginHttp,
    routes: &PluginRoutes,
    request: Request,
    path: &str,
) -> Response {
    let other_methods = routes
        .methods
        .iter()
        .filter(|(_, router)| router.at(path).is_ok())
        .map(|(method, _)| method.as_str())
        .collect::<Vec<_>>();
    if !other_methods.is_empty() {
        return ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{path} accepts {}", other_methods.join(", ")),
        )
        .into_response();
    }
    if let Some(files) = &http.static_files {
        match files.clone().try_call(request).await {
            Ok(response) => return response.map(Body::new),
            Err(error) => tracing::warn!("cannot serve a static file: {error}"),
        }
    }
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("nothing is served at {path}"),
    )
    .into_response()
}

impl PluginHttp {
    async fn call(
        &self,
        target: &Target,
        request: Request,
        params: Vec<(String, String)>,
    ) -> Result<Response, ApiError> {
        let (parts, body) = request.into_parts();
        let user_id = self.authenticate(target.auth, &parts.headers)?;
        let caller = match (target.auth, &user_id) {
            (RouteAuth::User, Some(user_id)) => Some(Caller::User(user_id.clone())),
            (RouteAuth::None, _) => parts
                .extensions
                .get::<ClientAddress>()
                .map(|client| Caller::Address(client.0)),
            _ => None,
        };
        if let Some(caller) = &caller {
            target.rates.take_request(caller).map_err(|over| {
                metrics::route_rate_limited(target.slot.spec.name.as_str());
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!(
                        "this caller asks plugin `{}` more than its limits allow (route_requests_per_second, route_plugin_ms_per_second); retry after {} s",
                        target.slot.spec.name,
                        over.retry_after_s()
                    ),
                )
                .retry_after(over.retry_after_s())
            })?;
        }
        let body = to_bytes(body, self.max_body_bytes).await.map_err(|error| {
            match error.into_inner().downcast::<LengthLimitError>() {
                Ok(_) => ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!(
                        "the body is over {} bytes (server.max_payload_bytes)",
                        self.max_body_bytes
                    ),
                ),
                Err(cut_short) => ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_incomplete",
                    format!("the body was cut short: {cut_short}"),
                ),
            }
        })?;
        let request = http_handler::Request {
            method: parts.method.as_str().to_owned(),
            path: parts.uri.path().to_owned(),
            params,
            query: parts.uri.query().unwrap_or_default().to_owned(),
            headers: forwarded_headers(&parts.headers),
            body: body.to_vec(),
            user_id,
        };
        let plugin = target.slot.current();
        let meter = caller.map(|caller| {
            Arc::new(CallerMeter {
                rates: target.rates.clone(),
                caller,
            }) as Arc<dyn Meter>
        });
        let response = plugin.on_http(&request, meter).await.map_err(|failure| {
            let status = match failure {
                CallError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
                CallError::Init { .. }
                | CallError::MissingExport { .. }
                | CallError::TooManyCalls { .. }
                | CallError::NoMemoryLeft { .. } => StatusCode::SERVICE_UNAVAILABLE,
                CallError::Trapped { .. } | CallError::MemoryLimit { .. } => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
                CallError::Conflict { .. } => StatusCode::CONFLICT,
                CallError::State {
                    error: StateError::Backend(_),
                    ..
                } => StatusCode::SERVICE_UNAVAILABLE,
                // A commit past the key quota: the only other failure of a commit.
                CallError::State { .. } => StatusCode::INSUFFICIENT_STORAGE,
            };
            ApiError::new(status, failure.code(), failure.to_string())
        })?;
        into_http(response).map_err(|problem| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "invalid_response",
                format!("plugin `{}` returned {problem}", target.slot.spec.name),
            )
        })
    }

    /// The user id the route's caller proved, if the route asks for one.
    fn authenticate(
        &self,
        auth: RouteAuth,
        headers: &HeaderMap,
    ) -> Result<Option<String>, ApiError> {
        match auth {
            RouteAuth::None => Ok(None),
            RouteAuth::ApiToken => {
                check_api_token(self.api_token.as_deref(), headers).map(|()| None)
            }
            RouteAuth::User => {
                let Some(verifier) = &self.verifier else {
                    // The manifest refuses user routes without `[auth]`.
                    return Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "auth_not_configured",
                        "this route needs `[auth]` in the manifest",
                    ));
                };
                let token = bearer_token(headers).ok_or(IdentityError::Missing);
                token
                    .and_then(|token| verifier.verify(token))
                    .map(|identity| Some(identity.user_id))
                    .map_err(|refused| {
                        ApiError::new(
                            StatusCode::UNAUTHORIZED,
                            refused.code(),
                            refused.to_string(),
                        )
                    })
            }
        }
    }
}

/// Request headers for the plugin: all but the credentials.
fn forwarded_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| *name != header::AUTHORIZATION && *name != header::COOKIE)
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect()
}

fn into_http(response: http_handler::Response) -> Result<Response, String> {
    let status = StatusCode::from_u16(response.status)
        .map_err(|_| format!("an invalid status {}", response.status))?;
    let mut http = Response::new(Body::from(response.body));
    *http.status_mut() = status;
    for (name, value) in response.headers {
        let header = HeaderName::try_from(&name)
            .ok()
            .zip(HeaderValue::try_from(&value).ok())
            .ok_or_else(|| format!("an invalid header `{name}`"))?;
        http.headers_mut().append(header.0, header.1);
    }
    Ok(http)
}
