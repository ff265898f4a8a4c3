//! Problems for requests no handler takes: axum's routers answer a known path with an
//! unsupported method by an empty 405; this layer turns it into the API's problem, keeping
//! the `Allow` header the router computed.

use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// Middleware: an empty 405 becomes a `method_not_allowed` problem. The `Allow` header is
/// kept where the response has it already; otherwise axum's route adds it to this response
/// on the way out (it sets `Allow` above the layers of the route).
pub async fn method_not_allowed_problem(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let response = next.run(req).await;
    if response.status() != StatusCode::METHOD_NOT_ALLOWED || response.headers().contains_key(header::CONTENT_TYPE) {
        return response;
    }
    let mut problem = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on this path; the Allow header lists the methods that are"),
    )
    .into_response();
    if let Some(allow) = response.headers().get(header::ALLOW) {
        problem.headers_mut().insert(header::ALLOW, allow.clone());
    }
    problem
}

/// Handler for `/api` paths no route matches, whatever the method.
pub async fn api_not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no_such_route", "no API route matches this path and method")
}
