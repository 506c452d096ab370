//! The requests of one message: the headers every target receives and the
//! bodies in the shapes the targets take, built once per message.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
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
    /// The message body, byte for byte.
    pub raw: Bytes,
    /// The logging envelope, when a target takes it.
    pub envelope: Option<Bytes>,
}

impl Requests {
    /// The body a target of `shape` receives.
    pub fn body(&self, shape: BodyShape) -> Option<&Bytes> {
        match shape {
            BodyShape::Raw => Some(&self.raw),
            BodyShape::Envelope => self.envelope.as_ref(),
        }
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
            Bytes::from(crate::domain::message::logging_api_envelope(
                event,
                json,
                &msg.message_id,
            ))
        });
        Ok(Requests {
            headers,
            raw: msg.body.clone(),
            envelope,
        })
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
        assert_eq!(&r.body(BodyShape::Raw).unwrap()[..], b" {\"a\":1} ");
        assert_eq!(
            &r.body(BodyShape::Envelope).unwrap()[..],
            br#"{"event":"user.registered","data":{"a":1},"message_id":"id-1"}"#
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
