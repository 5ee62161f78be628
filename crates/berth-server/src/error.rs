//! Rendering errors: the one place a registry error becomes a status, headers and the spec's
//! JSON body `{"errors":[{"code","message","detail"}]}`.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use berth_oci::ErrorCode;
use berth_registry::Error;
use http::{HeaderValue, StatusCode, header};

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

/// The JSON error body for one code.
pub(crate) fn body(code: ErrorCode, message: &str, detail: Option<serde_json::Value>) -> Response {
    let mut entry = serde_json::json!({ "code": code.as_str(), "message": message });
    if let Some(detail) = detail {
        entry["detail"] = detail;
    }
    let json = serde_json::json!({ "errors": [entry] }).to_string();
    let mut r = Response::new(Body::from(json));
    *r.status_mut() =
        StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let error = self.0;
        let code = error.code();
        let message = if error.is_internal() {
            // The chain may name paths and backend details: log it, tell the client little.
            tracing::error!(error = %error, source = ?std::error::Error::source(&error), "internal error");
            match &error {
                Error::Storage(e) if e.is_out_of_space() => {
                    "storage is full; the write was not stored".to_owned()
                }
                _ => code.message().to_owned(),
            }
        } else {
            error.to_string()
        };
        let mut r = body(code, &message, error.detail());
        if let Error::RangeNotSatisfiable { size } = error
            && let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}"))
        {
            r.headers_mut().insert(header::CONTENT_RANGE, v);
        }
        r
    }
}

/// A path that is not part of the API.
pub(crate) fn not_found() -> Response {
    let mut r = body(ErrorCode::Unsupported, "no such API endpoint", None);
    *r.status_mut() = StatusCode::NOT_FOUND;
    r
}

/// A method the endpoint does not support.
pub(crate) fn unsupported_method() -> ApiError {
    ApiError(Error::Unsupported("method not allowed for this endpoint"))
}
