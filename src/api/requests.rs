//! The requests of one message: the headers every target receives and the
//! bodies in the shapes the targets take, built once per message.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};

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
    /// An id that is not UTF-8 on the wire (the AMQP parser,
    /// patches/amq-protocol-types, keeps its bytes as private-use chars) has
    /// no faithful text form for an HTTP header: the API would see a key the
    /// publisher never sent.
    #[error(
        "message_id {0:?} is not valid UTF-8 on the wire; it cannot be a reliable Idempotency-Key"
    )]
    NotUtf8(String),
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
        // (obs-text) rather than being refused.
        if msg.message_id_from_property
            && crate::broker::fields::short_string_is_raw(msg.message_id.as_str())
        {
            return Err(UnsendableId::NotUtf8(
                crate::broker::fields::short_string_display(msg.message_id.as_str()).into_owned(),
            ));
        }
        let key = HeaderValue::from_bytes(msg.message_id.as_str().as_bytes())
            .map_err(|_| UnsendableId::ControlCharacters(msg.message_id.to_string()))?;
        headers.insert(IDEMPOTENCY_KEY.clone(), key);
        for (name, value) in [
            (&CORRELATION_ID, &msg.correlation_id),
            (&TRACEPARENT, &msg.traceparent),
            (&TRACESTATE, &msg.tracestate),
        ] {
            // These only help tracing; one that cannot be a header is dropped
            // rather than failing the message.
            if let Some(v) = value.as_deref().filter(|v| is_header_safe(v)) {
                if let Ok(v) = HeaderValue::from_bytes(v.as_bytes()) {
                    headers.insert(name.clone(), v);
                }
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
}
