//! A minimal AMQP 0-9-1 client that writes frames byte by byte, for
//! publishing what lapin cannot express: short strings that are not UTF-8,
//! field-table value types it would not write. Enough of the protocol for
//! the tests: handshake (PLAIN), one channel in confirm mode, exchange
//! declare/delete, queue bind, publish with hand-built properties, `basic.get`
//! returning the content header's property bytes as they came, close.

#![allow(dead_code)]

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::amqp_url;

const FRAME_METHOD: u8 = 1;
const FRAME_HEADER: u8 = 2;
const FRAME_BODY: u8 = 3;
const FRAME_HEARTBEAT: u8 = 8;
const FRAME_END: u8 = 0xCE;
const FRAME_MAX: u32 = 131_072;
const TIMEOUT: Duration = Duration::from_secs(10);

/// Encoders for the AMQP wire types.
pub mod wire {
    /// A short string: one length byte, then the bytes as they are.
    pub fn short(s: &[u8]) -> Vec<u8> {
        assert!(s.len() <= 255, "short string longer than 255 bytes");
        let mut out = vec![s.len() as u8];
        out.extend_from_slice(s);
        out
    }

    /// A long string: four length bytes, then the bytes as they are.
    pub fn long(s: &[u8]) -> Vec<u8> {
        let mut out = (s.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(s);
        out
    }

    /// A field table from (name, type tag + encoded value) entries.
    pub fn table(entries: &[(&[u8], Vec<u8>)]) -> Vec<u8> {
        let mut inner = Vec::new();
        for (name, value) in entries {
            inner.extend(short(name));
            inner.extend_from_slice(value);
        }
        long(&inner)
    }

    /// A typed field value: its type tag, then `raw`.
    pub fn value(tag: u8, raw: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend_from_slice(raw);
        out
    }

    /// 'S': a long string value.
    pub fn long_string_value(s: &[u8]) -> Vec<u8> {
        value(b'S', &long(s))
    }

    /// A short string at the start of `b`, and the rest.
    pub fn read_short(b: &[u8]) -> (Vec<u8>, &[u8]) {
        let n = b[0] as usize;
        (b[1..1 + n].to_vec(), &b[1 + n..])
    }

    fn long_len(b: &[u8]) -> usize {
        u32::from_be_bytes(b[..4].try_into().unwrap()) as usize
    }

    /// The entries of an encoded field table (with its length), as (name,
    /// type tag + encoded value) in wire order: the inverse of [`table`].
    pub fn entries(table: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut rest = &table[4..4 + long_len(table)];
        let mut out = Vec::new();
        while !rest.is_empty() {
            let (name, r) = read_short(rest);
            let size = 1 + match r[0] {
                b't' | b'b' | b'B' => 1,
                b's' | b'u' => 2,
                b'I' | b'i' | b'f' => 4,
                b'l' | b'L' | b'd' | b'T' => 8,
                b'D' => 5,
                b'S' | b'A' | b'F' | b'x' => 4 + long_len(&r[1..]),
                b'V' => 0,
                tag => panic!("field type {:?}", tag as char),
            };
            out.push((name, r[..size].to_vec()));
            rest = &r[size..];
        }
        out
    }
}

/// Basic properties, each as the bytes to put on the wire (short strings
/// unchecked), in the order of the property flags.
#[derive(Default, Clone)]
pub struct Props {
    pub content_type: Option<Vec<u8>>,
    pub content_encoding: Option<Vec<u8>>,
    /// An encoded field table (see [`wire::table`]).
    pub headers: Option<Vec<u8>>,
    pub delivery_mode: Option<u8>,
    pub priority: Option<u8>,
    pub correlation_id: Option<Vec<u8>>,
    pub reply_to: Option<Vec<u8>>,
    pub expiration: Option<Vec<u8>>,
    pub message_id: Option<Vec<u8>>,
    pub timestamp: Option<u64>,
    pub kind: Option<Vec<u8>>,
    pub user_id: Option<Vec<u8>>,
    pub app_id: Option<Vec<u8>>,
}

impl Props {
    /// Persistent, with `message_id` (UTF-8) set.
    pub fn with_id(id: &str) -> Props {
        Props {
            delivery_mode: Some(2),
            message_id: Some(id.as_bytes().to_vec()),
            ..Props::default()
        }
    }

    /// The property flags and list as they go on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let mut flags = 0u16;
        let mut list = Vec::new();
        let mut short = |bit: u16, v: &Option<Vec<u8>>, flags: &mut u16| {
            if let Some(v) = v {
                *flags |= 1 << bit;
                list.extend(wire::short(v));
            }
        };
        short(15, &self.content_type, &mut flags);
        short(14, &self.content_encoding, &mut flags);
        if let Some(h) = &self.headers {
            flags |= 1 << 13;
            list.extend_from_slice(h);
        }
        if let Some(m) = self.delivery_mode {
            flags |= 1 << 12;
            list.push(m);
        }
        if let Some(p) = self.priority {
            flags |= 1 << 11;
            list.push(p);
        }
        let mut short = |bit: u16, v: &Option<Vec<u8>>, flags: &mut u16| {
            if let Some(v) = v {
                *flags |= 1 << bit;
                list.extend(wire::short(v));
            }
        };
        short(10, &self.correlation_id, &mut flags);
        short(9, &self.reply_to, &mut flags);
        short(8, &self.expiration, &mut flags);
        short(7, &self.message_id, &mut flags);
        if let Some(t) = self.timestamp {
            flags |= 1 << 6;
            list.extend_from_slice(&t.to_be_bytes());
        }
        let mut short = |bit: u16, v: &Option<Vec<u8>>, flags: &mut u16| {
            if let Some(v) = v {
                *flags |= 1 << bit;
                list.extend(wire::short(v));
            }
        };
        short(5, &self.kind, &mut flags);
        short(4, &self.user_id, &mut flags);
        short(3, &self.app_id, &mut flags);
        let mut out = flags.to_be_bytes().to_vec();
        out.extend(list);
        out
    }
}

impl Props {
    /// The inverse of [`Props::encode`] (one flags word, as RabbitMQ sends).
    pub fn decode(bytes: &[u8]) -> Props {
        let flags = u16::from_be_bytes([bytes[0], bytes[1]]);
        let mut rest = &bytes[2..];
        let mut p = Props::default();
        let on = |bit: u16| flags & (1 << bit) != 0;
        let short = |bit: u16, rest: &mut &[u8]| {
            on(bit).then(|| {
                let (v, r) = wire::read_short(rest);
                *rest = r;
                v
            })
        };
        p.content_type = short(15, &mut rest);
        p.content_encoding = short(14, &mut rest);
        if on(13) {
            let n = 4 + u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            p.headers = Some(rest[..n].to_vec());
            rest = &rest[n..];
        }
        if on(12) {
            p.delivery_mode = Some(rest[0]);
            rest = &rest[1..];
        }
        if on(11) {
            p.priority = Some(rest[0]);
            rest = &rest[1..];
        }
        p.correlation_id = short(10, &mut rest);
        p.reply_to = short(9, &mut rest);
        p.expiration = short(8, &mut rest);
        p.message_id = short(7, &mut rest);
        if on(6) {
            p.timestamp = Some(u64::from_be_bytes(rest[..8].try_into().unwrap()));
            rest = &rest[8..];
        }
        p.kind = short(5, &mut rest);
        p.user_id = short(4, &mut rest);
        p.app_id = short(3, &mut rest);
        assert!(!on(2) || rest.is_empty(), "cluster_id is not decoded");
        p
    }
}

/// A message read with [`RawConnection::get`], as it came on the wire.
#[derive(Debug)]
pub struct RawMessage {
    pub routing_key: Vec<u8>,
    /// The content header's property flags and list, byte for byte.
    pub properties: Vec<u8>,
    pub body: Vec<u8>,
}

/// What the broker said to a publish.
#[derive(Debug, PartialEq, Eq)]
pub enum Confirm {
    Ack,
    Nack,
    /// Returned as unroutable (reply code, text), then acked.
    Returned(u16, String),
}

/// One connection with channel 1 open in confirm mode.
pub struct RawConnection {
    stream: TcpStream,
    next_tag: u64,
}

/// A method frame: class, method, arguments.
struct Method {
    class: u16,
    method: u16,
    args: Vec<u8>,
}

impl RawConnection {
    /// Connects to the test broker as the URL's user (PLAIN) on its vhost.
    pub async fn connect() -> RawConnection {
        let url = url::Url::parse(&amqp_url()).unwrap();
        let host = url.host_str().unwrap_or("127.0.0.1").to_owned();
        let port = url.port().unwrap_or(5672);
        let user = percent(url.username(), "guest");
        let pass = percent(url.password().unwrap_or(""), "guest");
        let vhost = match url.path().trim_start_matches('/') {
            "" => "/".to_owned(),
            p => percent(p, "/"),
        };
        let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect((host.as_str(), port)))
            .await
            .expect("connect within the deadline")
            .expect("the test broker accepts TCP connections");
        let mut c = RawConnection {
            stream,
            next_tag: 0,
        };
        c.write_all(b"AMQP\x00\x00\x09\x01").await;
        c.expect(0, 10, 10).await; // Connection.Start
        let mut args = wire::table(&[]); // client properties
        args.extend(wire::short(b"PLAIN"));
        args.extend(wire::long(format!("\0{user}\0{pass}").as_bytes()));
        args.extend(wire::short(b"en_US"));
        c.send_method(0, 10, 11, &args).await; // Start-Ok
        let tune = c.expect(0, 10, 30).await;
        let channel_max = u16::from_be_bytes([tune.args[0], tune.args[1]]);
        let server_frame_max = u32::from_be_bytes(tune.args[2..6].try_into().unwrap());
        let frame_max = if server_frame_max == 0 {
            FRAME_MAX
        } else {
            server_frame_max.min(FRAME_MAX)
        };
        let mut args = channel_max.to_be_bytes().to_vec();
        args.extend(frame_max.to_be_bytes());
        args.extend(0u16.to_be_bytes()); // no heartbeats
        c.send_method(0, 10, 31, &args).await; // Tune-Ok
        let mut args = wire::short(vhost.as_bytes());
        args.extend(wire::short(b""));
        args.push(0);
        c.send_method(0, 10, 40, &args).await; // Connection.Open
        c.expect(0, 10, 41).await;
        c.send_method(1, 20, 10, &wire::short(b"")).await; // Channel.Open
        c.expect(1, 20, 11).await;
        c.send_method(1, 85, 10, &[0]).await; // Confirm.Select
        c.expect(1, 85, 11).await;
        c
    }

    /// Publishes `body` with `props` (mandatory) and waits for the confirm.
    pub async fn publish(
        &mut self,
        exchange: &[u8],
        routing_key: &[u8],
        props: &Props,
        body: &[u8],
    ) -> Confirm {
        let mut args = 0u16.to_be_bytes().to_vec();
        args.extend(wire::short(exchange));
        args.extend(wire::short(routing_key));
        args.push(0b01); // mandatory
        self.send_method(1, 60, 40, &args).await;
        let mut header = 60u16.to_be_bytes().to_vec();
        header.extend(0u16.to_be_bytes());
        header.extend((body.len() as u64).to_be_bytes());
        header.extend(props.encode());
        self.send_frame(FRAME_HEADER, 1, &header).await;
        for chunk in body.chunks(FRAME_MAX as usize - 8) {
            self.send_frame(FRAME_BODY, 1, chunk).await;
        }
        self.next_tag += 1;
        let mut returned = None;
        loop {
            let (kind, _, payload) = self.read_frame().await;
            if kind != FRAME_METHOD {
                continue; // the content of a Basic.Return
            }
            let m = method(payload);
            match (m.class, m.method) {
                (60, 50) => {
                    let code = u16::from_be_bytes([m.args[0], m.args[1]]);
                    let text = String::from_utf8_lossy(&m.args[3..3 + m.args[2] as usize]);
                    returned = Some((code, text.into_owned()));
                }
                (60, 80) | (60, 120) => {
                    let tag = u64::from_be_bytes(m.args[0..8].try_into().unwrap());
                    assert_eq!(tag, self.next_tag, "confirm for our publish");
                    return match (m.method, returned) {
                        (120, _) => Confirm::Nack,
                        (_, Some((code, text))) => Confirm::Returned(code, text),
                        (_, None) => Confirm::Ack,
                    };
                }
                (20, 40) | (10, 50) => panic!("the broker closed: {}", close_text(&m)),
                other => panic!("unexpected method {other:?} while waiting for a confirm"),
            }
        }
    }

    /// Publishes to the default exchange (straight to `queue`) and asserts
    /// that the broker confirmed and routed it.
    pub async fn publish_to_queue(&mut self, queue: &str, props: &Props, body: &[u8]) {
        let confirm = self.publish(b"", queue.as_bytes(), props, body).await;
        assert_eq!(confirm, Confirm::Ack, "raw publish to {queue} confirmed");
    }

    /// `basic.get` with automatic ack: the next message of `queue`, its
    /// properties as the bytes the broker sent, or None when it is empty.
    pub async fn get(&mut self, queue: &str) -> Option<RawMessage> {
        let mut args = 0u16.to_be_bytes().to_vec();
        args.extend(wire::short(queue.as_bytes()));
        args.push(1); // no-ack
        self.send_method(1, 60, 70, &args).await;
        let (kind, _, payload) = self.read_frame().await;
        assert_eq!(kind, FRAME_METHOD, "a method frame");
        let m = method(payload);
        let routing_key = match (m.class, m.method) {
            (60, 72) => return None, // Get-Empty
            (60, 71) => {
                // delivery tag, redelivered, exchange, routing key, count
                let (_, rest) = wire::read_short(&m.args[9..]);
                wire::read_short(rest).0
            }
            (20, 40) | (10, 50) => panic!("the broker closed: {}", close_text(&m)),
            other => panic!("unexpected method {other:?} while waiting for Get-Ok"),
        };
        let (kind, _, header) = self.read_frame().await;
        assert_eq!(kind, FRAME_HEADER, "a content header frame");
        let size = u64::from_be_bytes(header[4..12].try_into().unwrap()) as usize;
        let mut body = Vec::with_capacity(size);
        while body.len() < size {
            let (kind, _, chunk) = self.read_frame().await;
            assert_eq!(kind, FRAME_BODY, "a content body frame");
            body.extend(chunk);
        }
        Some(RawMessage {
            routing_key,
            properties: header[12..].to_vec(),
            body,
        })
    }

    /// Declares a non-durable, auto-delete exchange of `kind`.
    pub async fn exchange_declare(&mut self, name: &[u8], kind: &str) {
        let mut args = 0u16.to_be_bytes().to_vec();
        args.extend(wire::short(name));
        args.extend(wire::short(kind.as_bytes()));
        args.push(0b0100); // auto-delete
        args.extend(wire::table(&[]));
        self.send_method(1, 40, 10, &args).await;
        self.expect(1, 40, 11).await;
    }

    pub async fn exchange_delete(&mut self, name: &[u8]) {
        let mut args = 0u16.to_be_bytes().to_vec();
        args.extend(wire::short(name));
        args.push(0);
        self.send_method(1, 40, 20, &args).await;
        self.expect(1, 40, 21).await;
    }

    pub async fn queue_bind(&mut self, queue: &str, exchange: &[u8], routing_key: &[u8]) {
        let mut args = 0u16.to_be_bytes().to_vec();
        args.extend(wire::short(queue.as_bytes()));
        args.extend(wire::short(exchange));
        args.extend(wire::short(routing_key));
        args.push(0);
        args.extend(wire::table(&[]));
        self.send_method(1, 50, 20, &args).await;
        self.expect(1, 50, 21).await;
    }

    /// Closes the connection politely.
    pub async fn close(mut self) {
        let mut args = 200u16.to_be_bytes().to_vec();
        args.extend(wire::short(b"bye"));
        args.extend([0, 0, 0, 0]);
        self.send_method(0, 10, 50, &args).await;
        let _ = tokio::time::timeout(TIMEOUT, async {
            loop {
                let (kind, _, payload) = self.read_frame().await;
                if kind == FRAME_METHOD {
                    let m = method(payload);
                    if (m.class, m.method) == (10, 51) {
                        return;
                    }
                }
            }
        })
        .await;
    }

    async fn write_all(&mut self, bytes: &[u8]) {
        tokio::time::timeout(TIMEOUT, self.stream.write_all(bytes))
            .await
            .expect("write within the deadline")
            .expect("the broker connection is open");
    }

    async fn send_frame(&mut self, kind: u8, channel: u16, payload: &[u8]) {
        let mut frame = vec![kind];
        frame.extend(channel.to_be_bytes());
        frame.extend((payload.len() as u32).to_be_bytes());
        frame.extend_from_slice(payload);
        frame.push(FRAME_END);
        self.write_all(&frame).await;
    }

    async fn send_method(&mut self, channel: u16, class: u16, method: u16, args: &[u8]) {
        let mut payload = class.to_be_bytes().to_vec();
        payload.extend(method.to_be_bytes());
        payload.extend_from_slice(args);
        self.send_frame(FRAME_METHOD, channel, &payload).await;
    }

    /// The next frame that is not a heartbeat: (type, channel, payload).
    async fn read_frame(&mut self) -> (u8, u16, Vec<u8>) {
        loop {
            let mut head = [0u8; 7];
            tokio::time::timeout(TIMEOUT, self.stream.read_exact(&mut head))
                .await
                .expect("a frame within the deadline")
                .expect("the broker connection is open");
            let size = u32::from_be_bytes(head[3..7].try_into().unwrap()) as usize;
            let mut payload = vec![0u8; size + 1];
            tokio::time::timeout(TIMEOUT, self.stream.read_exact(&mut payload))
                .await
                .expect("a frame within the deadline")
                .expect("the broker connection is open");
            assert_eq!(payload.pop(), Some(FRAME_END), "frame end");
            if head[0] != FRAME_HEARTBEAT {
                return (head[0], u16::from_be_bytes([head[1], head[2]]), payload);
            }
        }
    }

    /// Reads the next method and asserts it is `class.method` on `channel`.
    async fn expect(&mut self, channel: u16, class: u16, method_id: u16) -> Method {
        let (kind, ch, payload) = self.read_frame().await;
        assert_eq!(kind, FRAME_METHOD, "a method frame");
        let m = method(payload);
        if (m.class, m.method) == (20, 40) || (m.class, m.method) == (10, 50) {
            panic!("the broker closed: {}", close_text(&m));
        }
        assert_eq!(
            (ch, m.class, m.method),
            (channel, class, method_id),
            "expected method"
        );
        m
    }
}

fn method(payload: Vec<u8>) -> Method {
    Method {
        class: u16::from_be_bytes([payload[0], payload[1]]),
        method: u16::from_be_bytes([payload[2], payload[3]]),
        args: payload[4..].to_vec(),
    }
}

fn close_text(m: &Method) -> String {
    let code = u16::from_be_bytes([m.args[0], m.args[1]]);
    let len = m.args[2] as usize;
    format!(
        "{code} {}",
        String::from_utf8_lossy(&m.args[3..3 + len.min(m.args.len() - 3)])
    )
}

fn percent(s: &str, default: &str) -> String {
    if s.is_empty() {
        return default.to_owned();
    }
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| default.to_owned())
}
