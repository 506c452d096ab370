//! The requests of one message: the headers every target receives and the
//! bodies in the shapes the targets take, built once per message. No body
//! copies the message: a `raw` body is the delivery's buffer, an `envelope`
//! is that buffer between a short head and tail; every attempt of every
//! target sends clones of these handles.

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::body::{Frame, SizeHint};
use tracing::warn;

use crate::domain::{message::is_header_safe, BodyShape, InboundMessage};

static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
static CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The headers and bodies of one message's requests, built once per message.
#[derive(Clone, Debug)]
pub struct Requests {
    pub headers: HeaderMap,
    /// The message body, byte for byte: the delivery's buffer.
    pub raw: Bytes,
    /// The logging envelope, when a target takes it: head, the JSON text (a
    /// slice of the delivery's buffer), tail.
    pub envelope: Option<[Bytes; 3]>,
}

impl Requests {
    /// The body a target of `shape` receives, for one attempt: handles on
    /// the message's buffers, not a copy.
    pub fn body(&self, shape: BodyShape) -> Option<RequestBody> {
        match shape {
            BodyShape::Raw => Some(RequestBody::new([
                self.raw.clone(),
                Bytes::new(),
                Bytes::new(),
            ])),
            BodyShape::Envelope => self.envelope.clone().map(RequestBody::new),
        }
    }
}

/// A request body sent as up to three shared buffers, with its exact length
/// (so the request has a `Content-Length`). A clone shares the buffers.
#[derive(Clone, Debug)]
pub struct RequestBody {
    parts: [Bytes; 3],
    next: usize,
}

impl RequestBody {
    fn new(parts: [Bytes; 3]) -> RequestBody {
        RequestBody { parts, next: 0 }
    }

    /// The whole body, copied (for tests and diagnostics).
    pub fn to_vec(&self) -> Vec<u8> {
        self.parts[self.next..].concat()
    }

    fn remaining(&self) -> u64 {
        self.parts[self.next..].iter().map(|p| p.len() as u64).sum()
    }
}

impl hyper::body::Body for RequestBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        while self.next < self.parts.len() {
            let i = self.next;
            self.next += 1;
            let part = std::mem::take(&mut self.parts[i]);
            if !part.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(part))));
            }
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.remaining() == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining())
    }
}

/// Why a message's id cannot be its Idempotency-Key.
#[derive(Debug, thiserror::Error)]
pub enum UnsendableId {
    #[error(
        "message_id {0:?} contains control characters and cannot be sent as the Idempotency-Key header"
    )]
    ControlCharacters(String),
}

impl Requests {
    /// Builds the requests of `msg`. `json` is the trimmed JSON text of the
    /// body, `event` the logging event name; the envelope is only built when
    /// `envelope` is set.
    ///
    /// # Errors
    /// When the message id cannot be an HTTP header value.
    pub fn build(
        msg: &InboundMessage,
        json: &[u8],
        event: &str,
        envelope: bool,
    ) -> Result<Requests, UnsendableId> {
        let mut headers = HeaderMap::with_capacity(5);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        // from_bytes, not from_str: a non-ASCII id travels as its UTF-8 bytes
        // (obs-text) rather than being refused. (An id that was not UTF-8 on
        // the wire is already its `raw-sha256:` key, see MessageId::of_raw_id.)
        let key = HeaderValue::from_bytes(msg.message_id.as_str().as_bytes())
            .map_err(|_| UnsendableId::ControlCharacters(msg.message_id.to_string()))?;
        headers.insert(IDEMPOTENCY_KEY.clone(), key);
        // These only help tracing; one that cannot be sent as it came is left
        // out rather than failing the message, or being sent changed (the API
        // would correlate on a value the publisher never used).
        if let Some(v) = &msg.correlation_id {
            match unsendable_correlation_id(v) {
                None => insert(&mut headers, &CORRELATION_ID, v),
                Some(why) => warn!(
                    // Debug: quoted and escaped, a line break cannot forge a log line.
                    correlation_id = ?crate::broker::fields::short_string_display(v),
                    "correlation_id {why}: X-Correlation-Id left out"
                ),
            }
        }
        for (name, value) in [
            (&TRACEPARENT, &msg.traceparent),
            (&TRACESTATE, &msg.tracestate),
        ] {
            let Some(v) = value else { continue };
            // W3C trace context is visible ASCII; anything else (a value
            // read lossily from bytes that were not UTF-8 included) is not
            // a trace context an API could use.
            if v.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                insert(&mut headers, name, v);
            } else {
                // The value is not logged: a header can be a frame long.
                warn!(header = %name, "not a valid trace-context value: header left out");
            }
        }
        let envelope = envelope.then(|| {
            let (head, tail) =
                crate::domain::message::logging_api_envelope_around(event, &msg.message_id);
            [
                Bytes::from(head),
                shared_slice(&msg.body, json),
                Bytes::from(tail),
            ]
        });
        Ok(Requests {
            headers,
            raw: msg.body.clone(),
            envelope,
        })
    }
}

/// `part` as a slice of `whole`'s buffer when it lies within it (the JSON
/// text of a body always does), else a copy.
fn shared_slice(whole: &Bytes, part: &[u8]) -> Bytes {
    let start = (part.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
    if start <= whole.len() && part.len() <= whole.len() - start {
        whole.slice_ref(part)
    } else {
        Bytes::copy_from_slice(part)
    }
}

/// Why a correlation id cannot be sent as `X-Correlation-Id`, if it cannot.
fn unsendable_correlation_id(v: &str) -> Option<&'static str> {
    if crate::broker::fields::short_string_is_raw(v) {
        // Its text form holds private-use chars standing for the bytes, not
        // the bytes: the API would see a value nobody sent.
        Some("is not UTF-8 on the wire")
    } else if !is_header_safe(v) {
        Some("holds control characters")
    } else {
        None
    }
}

fn insert(headers: &mut HeaderMap, name: &HeaderName, v: &str) {
    if let Ok(v) = HeaderValue::from_bytes(v.as_bytes()) {
        headers.insert(name.clone(), v);
    }
}

#[cfg(test)]
pub(crate) fn test_message(id: &str, correlation: Option<&str>) -> InboundMessage {
    use crate::domain::{MessageId, TargetSet};
    InboundMessage {
        body: Bytes::from_static(b" {\"a\":1} "),
        message_id: MessageId::resolve(Some(id), b""),
        message_id_from_property: true,
        kind: None,
        correlation_id: correlation.map(str::to_owned),
        traceparent: None,
        tracestate: None,
        done: TargetSet::empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::{test_message as message, *};

    #[test]
    fn builds_both_requests() {
        let msg = message("id-1", Some("c-1"));
        let r = Requests::build(&msg, b"{\"a\":1}", "user.registered", true).unwrap();
        assert_eq!(r.headers["idempotency-key"], "id-1");
        assert_eq!(r.headers["x-correlation-id"], "c-1");
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(r.body(BodyShape::Raw).unwrap().to_vec(), b" {\"a\":1} ");
        assert_eq!(
            r.body(BodyShape::Envelope).unwrap().to_vec(),
            br#"{"event":"user.registered","data":{"a":1},"message_id":"id-1"}"#
        );
    }

    #[test]
    fn bodies_share_the_delivery_buffer() {
        use hyper::body::Body as _;
        let msg = message("id-1", None);
        let json = &msg.body[1..8];
        let r = Requests::build(&msg, json, "e", true).unwrap();
        assert_eq!(r.raw.as_ptr(), msg.body.as_ptr(), "raw: the same buffer");
        let data = &r.envelope.as_ref().unwrap()[1];
        assert_eq!(data.as_ptr(), json.as_ptr(), "envelope data: a slice of it");
        let body = r.body(BodyShape::Envelope).unwrap();
        assert_eq!(
            body.size_hint().exact(),
            Some(body.to_vec().len() as u64),
            "an exact length: Content-Length"
        );
    }

    #[test]
    fn non_ascii_ids_travel_and_control_characters_are_refused() {
        let msg = message("usér-1", Some("bad\ncorrelation"));
        let r = Requests::build(&msg, b"1", "e", false).unwrap();
        assert!(r.envelope.is_none(), "built only when a target takes it");
        assert_eq!(r.headers["idempotency-key"].as_bytes(), "usér-1".as_bytes());
        assert!(
            !r.headers.contains_key("x-correlation-id"),
            "an unsendable optional header is dropped"
        );
        assert!(Requests::build(&message("a\r\nb", None), b"1", "e", true).is_err());
    }

    #[test]
    fn values_that_were_not_utf8_are_left_out_rather_than_sent_changed() {
        // What the AMQP parser makes of b"corr-\xff": the private-use char
        // is not the byte the publisher sent.
        let mut msg = message("id-1", Some("corr-\u{10FFFF}"));
        msg.traceparent = Some("00-\u{FFFD}-\u{FFFD}-01".into());
        msg.tracestate = Some("k=v".into());
        let r = Requests::build(&msg, b"1", "e", false).unwrap();
        assert!(!r.headers.contains_key("x-correlation-id"));
        assert!(!r.headers.contains_key("traceparent"));
        assert_eq!(r.headers["tracestate"], "k=v");
        assert_eq!(r.headers["idempotency-key"], "id-1");
    }
}
