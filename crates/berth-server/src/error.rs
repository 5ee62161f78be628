//! Rendering errors: the one place a registry error becomes a status, headers and the spec's
//! JSON body `{"errors":[{"code","message","detail"}]}`. An internal error's full chain is not
//! logged here but handed to `dispatch` (as [`InternalError`]), which logs it once, with its
//! request.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use berth_oci::ErrorCode;
use berth_registry::Error;
use http::{HeaderName, HeaderValue, StatusCode, header};

/// An error on its way to the client, with any headers the endpoint adds to it (an upload's
/// `Location` and `Range` on a 416).
#[derive(Debug)]
pub struct ApiError {
    error: Error,
    headers: Vec<(HeaderName, String)>,
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        ApiError {
            error,
            headers: Vec::new(),
        }
    }
}

impl ApiError {
    /// The registry error it renders.
    pub(crate) fn error(&self) -> &Error {
        &self.error
    }

    /// Adds a header to the rendered error.
    pub(crate) fn with_header(mut self, name: impl Into<HeaderName>, value: String) -> Self {
        self.headers.push((name.into(), value));
        self
    }
}

/// An internal error's full text, on its response for `dispatch` to log with the request.
#[derive(Debug, Clone)]
pub(crate) struct InternalError(pub(crate) String);

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
        let ApiError { error, headers } = self;
        let code = error.code();
        let internal = error.is_internal().then(|| {
            let mut text = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            InternalError(text)
        });
        let message = if internal.is_some() {
            // The chain may name paths and backend details: logged, not told to the client.
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
        for (name, value) in headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                r.headers_mut().insert(name, v);
            }
        }
        if let Some(internal) = internal {
            r.extensions_mut().insert(internal);
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
    Error::Unsupported("method not allowed for this endpoint").into()
}
