//! The Origin policy at the Socket.IO path. A browser always sends `Origin`
//! on a WebSocket upgrade and on cross-origin requests, and it sends the
//! page's cookies along, so a page the manifest does not allow is refused
//! (403) before socketioxide sees the request: on the polling handshake, on
//! every polling request and on the upgrade. Allowed cross-origin pages get
//! CORS headers, credentials included. Requests without `Origin` come from
//! clients that are not browsers and carry no one else's cookies: they pass.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower::{Layer, ServiceExt};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

use super::ApiError;
use crate::manifest::AllowedOrigins;
use crate::transport::SocketIoPath;

/// What guards the Socket.IO path; see [`guard`].
pub struct OriginGuard {
    path: SocketIoPath,
    origins: Arc<AllowedOrigins>,
    cors: CorsLayer,
}

impl OriginGuard {
    pub fn new(path: SocketIoPath, origins: AllowedOrigins) -> Self {
        let origins = Arc::new(origins);
        let cors = CorsLayer::new()
            .allow_origin(AllowOrigin::predicate({
                let origins = origins.clone();
                move |origin, request| allows(&origins, origin, &request.headers)
            }))
            .allow_credentials(true)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers(AllowHeaders::mirror_request());
        Self {
            path,
            origins,
            cors,
        }
    }
}

/// Middleware in front of socketioxide: refuses pages the manifest does not
/// allow, answers CORS preflights and adds CORS headers for the others.
pub async fn guard(
    State(guard): State<Arc<OriginGuard>>,
    request: Request,
    next: Next,
) -> Response {
    if !guard.path.covers(request.uri().path()) {
        return next.run(request).await;
    }
    if let Some(origin) = request.headers().get(header::ORIGIN)
        && !allows(&guard.origins, origin, request.headers())
    {
        tracing::info!(
            ?origin,
            "refused a Socket.IO request from a page `[server] allowed_origins` does not allow"
        );
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            format!(
                "pages of {} may not connect: the server's `[server] allowed_origins` does not list it",
                origin.to_str().unwrap_or("this origin")
            ),
        )
        .into_response();
    }
    let Ok(response) = guard.cors.layer(next).oneshot(request).await;
    response
}

fn allows(origins: &AllowedOrigins, origin: &HeaderValue, headers: &HeaderMap) -> bool {
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok());
    origin
        .to_str()
        .is_ok_and(|origin| origins.allows(origin, host))
}
