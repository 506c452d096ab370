//! What a call leaves behind besides its status: response bodies read only
//! far enough to reuse the connection, and transport errors described for
//! logs and spans without the URL's credentials.

use std::time::Duration;

/// The `error.type` of a transport error, for the attempt's span.
pub(super) fn error_type(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "request"
    }
}

/// Reads and drops a response body chunk by chunk, at most about `cap` bytes
/// (one chunk past it); true if it ended within the cap, so the connection
/// can go back to the pool.
pub(super) async fn discard_body(response: &mut reqwest::Response, cap: usize) -> bool {
    let mut read = 0usize;
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                read = read.saturating_add(chunk.len());
                if read > cap {
                    return false;
                }
            }
            Ok(None) => return true,
            Err(_) => return false,
        }
    }
}

/// Removes a URL's credentials from an error text, should a library ever
/// include them.
pub(super) fn scrub(text: String, url: &reqwest::Url) -> String {
    let mut text = text;
    for secret in [url.password().unwrap_or(""), url.username()] {
        if !secret.is_empty() && text.contains(secret) {
            text = text.replace(secret, "***");
        }
    }
    text
}

/// A short description of a transport error, without the URL (it may carry
/// credentials).
pub(super) fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        format!("timed out after {} ms", timeout.as_millis())
    } else if e.is_connect() {
        let mut source = std::error::Error::source(e);
        let mut root = None;
        while let Some(s) = source {
            root = Some(s.to_string());
            source = s.source();
        }
        match root {
            Some(r) => format!("connection failed ({r})"),
            None => "connection failed".to_owned(),
        }
    } else {
        let mut text = String::from("request failed");
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    }
}
