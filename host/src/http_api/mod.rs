//! The HTTP side: health and readiness probes, `/api/v1` for backends to
//! push events to sockets and read room membership on any node, the routes
//! plugins serve ([`plugin_routes`]), the `[api]` token ([`token`]), the
//! Origin policy in front of Socket.IO ([`origin`]) and the deadline of a
//! request's body ([`body_deadline`]).

pub mod body_deadline;
mod caller_rates;
pub mod origin;
pub mod plugin_routes;
pub mod token;

use plugin_routes::PluginHttp;
pub use token::ApiToken;
use token::check_api_token;

use std::future::Future;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::net::TcpListener;

use crate::cluster::{NodeLiveness, NodeReport, Reporter};
use crate::listener::{self, Admission, RequestLimits};
use crate::manifest::{MetricsAccess, is_reserved_event};
use crate::metrics::Metrics;
use crate::payload::Outgoing;
use crate::reload::{ReloadCounts, ReloadError, Reloaded, Reloader};
use crate::runtime::PluginStatus;
use crate::transport::{
    Audience, Namespaces, Sockets, SocketsError, check_audience, socket_room, user_room,
};

/// Whether the node can do its whole job: `None` when always ready (one node
/// in memory), otherwise a check of its cluster connection.
pub type Readiness = Option<Arc<dyn Fn() -> Result<(), String> + Send + Sync>>;

/// What the HTTP API reaches.
pub struct ApiState {
    pub sockets: Arc<dyn Sockets>,
    /// The cluster's nodes, or this one alone.
    pub nodes: Nodes,
    /// `None`: `/api/v1` is off.
    pub token: Option<Arc<ApiToken>>,
    pub metrics: MetricsAccess,
    pub namespaces: Arc<Namespaces>,
    pub readiness: Readiness,
    pub reloader: Arc<Reloader>,
    pub admission: Arc<Admission>,
}

/// The host's own routes, then the plugins' routes and static files.
pub fn router(state: ApiState, plugin_http: Arc<PluginHttp>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/api/v1/emit", post(emit))
        .route("/api/v1/namespaces/{namespace}/rooms/{room}", get(room))
        .route("/metrics", get(metrics))
        .route("/api/v1/plugins", get(plugins))
        .route("/api/v1/nodes", get(nodes))
        .route("/api/v1/plugins/{name}/reload", post(reload))
        .fallback(move |request| plugin_routes::serve(plugin_http.clone(), request))
        .with_state(Arc::new(state))
}

/// Answers on `listener` while the server is still starting (loading plugins,
/// waiting for Redis): `/healthz` is 200, everything else, `/readyz` included,
/// is 503, with the connection limits the server will have. Returns when
/// `started` resolves, once in-flight requests are done.
pub async fn serve_while_starting(
    listener: TcpListener,
    admission: Arc<Admission>,
    requests: RequestLimits,
    started: impl Future<Output = ()> + Send + 'static,
) {
    let starting = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "starting",
                "the server is starting: loading plugins or waiting for Redis",
            )
        });
    listener::serve(listener, starting, admission, requests, started).await;
}

/// A JSON error body: `{ "error": { "code", "message" } }`, the same shape
/// clients get in acks.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Seconds a client should wait before it retries (`Retry-After`).
    retry_after_s: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_s: None,
        }
    }

    pub fn retry_after(self, seconds: u64) -> Self {
        Self {
            retry_after_s: Some(seconds),
            ..self
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body<'a> {
            error: Inner<'a>,
        }
        #[derive(Serialize)]
        struct Inner<'a> {
            code: &'a str,
            message: &'a str,
        }
        let body = Body {
            error: Inner {
                code: self.code,
                message: &self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after_s {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<SocketsError> for ApiError {
    fn from(error: SocketsError) -> Self {
        match error {
            SocketsError::UnknownNamespace(_) => Self::new(
                StatusCode::NOT_FOUND,
                "unknown_namespace",
                error.to_string(),
            ),
            SocketsError::Transport(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "transport_error",
                error.to_string(),
            ),
            SocketsError::Unavailable(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "cluster_unavailable",
                error.to_string(),
            ),
        }
    }
}

/// `Json`, with a rejection in our error shape.
struct Body<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        Json::<T>::from_request(request, state)
            .await
            .map(|Json(value)| Self(value))
            .map_err(|rejection: JsonRejection| {
                ApiError::new(rejection.status(), "bad_request", rejection.body_text())
            })
    }
}

/// A caller that presented the `[api]` token. Taken before the body
/// extractor, so a request without the token is refused before its body is
/// read.
struct ApiCaller;

impl FromRequestParts<Arc<ApiState>> for ApiCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, ApiError> {
        check_api_token(state.token.as_deref(), &parts.headers).map(|()| Self)
    }
}

impl ApiState {
    /// Accepts `chat` as well as `/chat`; `%2F` is the root namespace.
    fn namespace(&self, namespace: &str) -> Result<String, ApiError> {
        let namespace = if namespace.starts_with('/') {
            namespace.to_owned()
        } else {
            format!("/{namespace}")
        };
        let served = self.namespaces.paths();
        if served.contains(&namespace) {
            Ok(namespace)
        } else {
            Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_namespace",
                format!(
                    "namespace `{namespace}` is not served; served: {}",
                    served.join(", ")
                ),
            ))
        }
    }
}

async fn ready(State(state): State<Arc<ApiState>>) -> Result<&'static str, ApiError> {
    match state.readiness.as_ref().map(|check| check()) {
        None | Some(Ok(())) => Ok("ready"),
        Some(Err(reason)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            reason,
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmitRequest {
    namespace: String,
    to: Recipient,
    event: String,
    /// The event's one argument.
    data: Option<Box<RawValue>>,
    /// Its arguments, for none or several.
    args: Option<Vec<Box<RawValue>>>,
}

impl EmitRequest {
    fn arguments(&mut self) -> Result<Vec<Box<RawValue>>, ApiError> {
        match (self.data.take(), self.args.take()) {
            (Some(data), None) => Ok(vec![data]),
            (None, Some(args)) => Ok(args),
            _ => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "give the event's `data` (one argument) or its `args` (a list of them), not both",
            )),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
enum Recipient {
    Room(String),
    Socket(String),
    /// Every socket of a user, through the room `user:{id}` they join.
    User(String),
}

async fn emit(
    State(state): State<Arc<ApiState>>,
    _: ApiCaller,
    Body(mut request): Body<EmitRequest>,
) -> Result<StatusCode, ApiError> {
    let namespace = state.namespace(&request.namespace)?;
    let arguments = request.arguments()?;
    if request.event.is_empty() || is_reserved_event(&request.event) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "reserved_event",
            format!(
                "`{}` cannot be emitted: it is empty or reserved by Socket.IO",
                request.event
            ),
        ));
    }
    let room = match request.to {
        Recipient::Room(room) => room,
        Recipient::Socket(socket_id) => socket_room(&socket_id),
        Recipient::User(user_id) => user_room(&user_id),
    };
    check_audience(&room).map_err(|invalid| {
        ApiError::new(StatusCode::BAD_REQUEST, invalid.code(), invalid.to_string())
    })?;
    let audience = Audience {
        room: Some(room),
        except: None,
    };
    state
        .sockets
        .emit(
            &namespace,
            audience,
            &request.event,
            Outgoing::Json(arguments),
        )
        .await?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Serialize)]
struct RoomResponse {
    namespace: String,
    room: String,
    size: usize,
    members: Vec<String>,
}

async fn room(
    State(state): State<Arc<ApiState>>,
    _: ApiCaller,
    Path((namespace, room)): Path<(String, String)>,
) -> Result<Json<RoomResponse>, ApiError> {
    let namespace = state.namespace(&namespace)?;
    let members = state.sockets.members(&namespace, room.clone()).await?;
    Ok(Json(RoomResponse {
        namespace,
        room,
        size: members.len(),
        members,
    }))
}

#[derive(Serialize)]
struct PluginsResponse {
    plugins: Vec<PluginStatus>,
    #[serde(flatten)]
    counts: ReloadCounts,
}

async fn plugins(
    State(state): State<Arc<ApiState>>,
    _: ApiCaller,
) -> Result<Json<PluginsResponse>, ApiError> {
    Ok(Json(PluginsResponse {
        plugins: state.reloader.statuses(),
        counts: state.reloader.counts(),
    }))
}

/// Where `GET /api/v1/nodes` finds the nodes.
pub enum Nodes {
    /// A node without a cluster reports itself.
    Alone(Reporter),
    /// Each node of a cluster reports itself in Redis with its heartbeat.
    Cluster(Arc<NodeLiveness>),
}

#[derive(Serialize)]
struct NodesResponse {
    nodes: Vec<NodeReport>,
}

/// The live nodes with their sockets and plugin versions: a rollout that
/// stopped halfway shows as nodes running different versions.
async fn nodes(
    State(state): State<Arc<ApiState>>,
    _: ApiCaller,
) -> Result<Json<NodesResponse>, ApiError> {
    let nodes = match &state.nodes {
        Nodes::Alone(report) => vec![report()],
        Nodes::Cluster(liveness) => liveness.nodes().await.map_err(|error| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "cluster_unavailable",
                format!("cannot read the cluster's nodes from Redis: {error}"),
            )
        })?,
    };
    Ok(Json(NodesResponse { nodes }))
}

#[derive(Serialize)]
struct ReloadResponse {
    plugin: String,
    result: Reloaded,
    version: String,
}

async fn reload(
    State(state): State<Arc<ApiState>>,
    _: ApiCaller,
    Path(name): Path<String>,
) -> Result<Json<ReloadResponse>, ApiError> {
    let result = state
        .reloader
        .reload(&name)
        .await
        .map_err(|error| match error {
            ReloadError::UnknownPlugin(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_plugin", error.to_string())
            }
            ReloadError::Rejected { .. } | ReloadError::Manifest(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "reload_failed",
                error.to_string(),
            ),
        })?;
    let version = state
        .reloader
        .statuses()
        .into_iter()
        .find(|status| status.name == name)
        .map(|status| status.version)
        .unwrap_or_default();
    Ok(Json(ReloadResponse {
        plugin: name,
        result,
        version,
    }))
}

/// Prometheus text exposition of the reload counters, running versions and
/// connection counts; behind the `[api]` token unless `[api] metrics = "public"`.
async fn metrics(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    use std::fmt::Write;
    if state.metrics == MetricsAccess::Token {
        check_api_token(state.token.as_deref(), &headers)?;
    }
    let counts = state.reloader.counts();
    let mut text = Metrics::global().render();
    let _ = writeln!(
        text,
        "# HELP switchboard_plugin_reloads_total Plugin reloads attempted (file change, API or SIGHUP)."
    );
    let _ = writeln!(text, "# TYPE switchboard_plugin_reloads_total counter");
    let _ = writeln!(text, "switchboard_plugin_reloads_total {}", counts.reloads);
    let _ = writeln!(
        text,
        "# HELP switchboard_plugin_reload_failures_total Reloads that kept the running version."
    );
    let _ = writeln!(
        text,
        "# TYPE switchboard_plugin_reload_failures_total counter"
    );
    let _ = writeln!(
        text,
        "switchboard_plugin_reload_failures_total {}",
        counts.failures
    );
    let _ = writeln!(
        text,
        "# HELP switchboard_plugin_info The running version of each plugin."
    );
    let _ = writeln!(text, "# TYPE switchboard_plugin_info gauge");
    for status in state.reloader.statuses() {
        let _ = writeln!(
            text,
            "switchboard_plugin_info{{plugin=\"{}\",version=\"{}\"}} 1",
            status.name, status.version
        );
    }
    state.admission.write_metrics(&mut text);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text))
}
