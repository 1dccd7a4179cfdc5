//! Makes every error response JSON. Handlers answer with [`ApiError`], but
//! axum's own rejections (a body over the size limit, an unparsable query
//! string or path, a method the route lacks) answer in plain text; this
//! layer rewrites those into `{"error": {"code", "message"}}` with the same
//! status, keeping headers such as `Allow`.

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// Longest plain-text rejection message carried over.
const MESSAGE_BYTES_MAX: usize = 1024;

fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "invalid_argument",
        StatusCode::UNAUTHORIZED => "unauthenticated",
        StatusCode::FORBIDDEN => "permission_denied",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_argument",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_server_error() => "internal",
        _ => "error",
    }
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// The `map_response` layer.
pub(crate) async fn json_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(&response) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, MESSAGE_BYTES_MAX * 4).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_owned(),
        Err(_) => String::new(),
    };
    let mut message = if text.is_empty() { status.canonical_reason().unwrap_or("error").to_owned() } else { text };
    if message.len() > MESSAGE_BYTES_MAX {
        let mut cut = MESSAGE_BYTES_MAX;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        message = format!("{message} (the limit is {} bytes)", super::BODY_BYTES_MAX);
    }
    let mut rewritten = ApiError::new(status, code_for(status), message).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH && !rewritten.headers().contains_key(name) {
            rewritten.headers_mut().insert(name.clone(), value.clone());
        }
    }
    let (mut new_parts, new_body) = rewritten.into_parts();
    new_parts.extensions = parts.extensions;
    Response::from_parts(new_parts, Body::new(new_body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn plain_rejections_become_json_and_keep_headers() {
        let plain = Response::builder()
            .status(StatusCode::METHOD_NOT_ALLOWED)
            .header(header::ALLOW, "GET,POST")
            .body(Body::empty())
            .expect("response");
        let out = json_errors(plain).await;
        assert_eq!(out.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(out.headers()[header::ALLOW], "GET,POST");
        assert!(is_json(&out));
        let body = axum::body::to_bytes(out.into_body(), 4096).await.expect("body");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["error"]["code"], "method_not_allowed");
        assert_eq!(v["error"]["message"], "Method Not Allowed");

        let long = "é".repeat(3000);
        let plain = (StatusCode::BAD_REQUEST, long).into_response();
        let out = json_errors(plain).await;
        let body = axum::body::to_bytes(out.into_body(), 1 << 16).await.expect("body");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["error"]["code"], "invalid_argument");
        assert!(v["error"]["message"].as_str().expect("str").len() <= MESSAGE_BYTES_MAX);

        let ok = (StatusCode::OK, "fine").into_response();
        assert!(!is_json(&json_errors(ok).await));
    }
}
