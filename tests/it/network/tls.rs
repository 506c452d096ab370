//! TLS: a throw-away CA made here (rcgen), HTTPS APIs and an `amqps://` broker
//! played by TLS terminators (tokio-rustls) in front of the plain fakes and the
//! real broker. Trusted CA works, an unknown CA is a transient error that never
//! acks, mutual TLS works with the client certificate and fails without it,
//! an API offering HTTP/2 gets HTTP/2 and a silent HTTP/2 connection is
//! replaced (pings), the `HTTPS_PROXY` tunnel, and bad files
//! stop `run` with exit 2 naming the variable.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use fanout_bridge::{
    app,
    config::RawConfig,
    metrics::{AttemptResult, Outcome},
};
use lapin::BasicProperties;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::{crypto::ring, server::WebPkiClientVerifier, RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::helpers::*;

// === A throw-away PKI ===

/// One leaf certificate and its key.
struct Leaf {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key_pem: String,
    key_der: Vec<u8>,
}

/// A CA with a server certificate (127.0.0.1, localhost) and a client
/// certificate, written as PEM files into a private temporary directory.
pub(crate) struct Pki {
    dir: PathBuf,
    ca_der: CertificateDer<'static>,
    server: Leaf,
}

impl Pki {
    pub(crate) fn new(name: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!(
            "fanout-bridge-tls-{name}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("fanout-bridge test CA {name}"));
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf = |sans: Vec<String>, usage: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(sans).unwrap();
            params
                .distinguished_name
                .push(DnType::CommonName, "fanout-bridge test");
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
            Leaf {
                cert_pem: cert.pem(),
                cert_der: cert.der().clone(),
                key_pem: key.serialize_pem(),
                key_der: key.serialize_der(),
            }
        };
        let server = leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let client = leaf(
            vec!["fanout-bridge".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let pki = Pki {
            dir,
            ca_der: ca.der().clone(),
            server,
        };
        pki.write("ca.pem", &ca.pem());
        pki.write("client.pem", &client.cert_pem);
        pki.write("client.key", &client.key_pem);
        pki
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    }

    pub(crate) fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    /// `BRIDGE_CA_FILE` = this CA.
    pub(crate) fn ca_var(&self) -> (String, String) {
        ("BRIDGE_CA_FILE".into(), self.path("ca.pem"))
    }

    /// The client certificate and key variables.
    fn client_vars(&self) -> Vec<(String, String)> {
        vec![
            ("BRIDGE_TLS_CERT_FILE".into(), self.path("client.pem")),
            ("BRIDGE_TLS_KEY_FILE".into(), self.path("client.key")),
        ]
    }

    /// A server configuration with this CA's server certificate; with
    /// `require_client_cert`, only clients with a certificate of this CA get in.
    pub(crate) fn server_config(&self, require_client_cert: bool) -> Arc<ServerConfig> {
        let provider = Arc::new(ring::default_provider());
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if require_client_cert {
            let mut roots = RootCertStore::empty();
            roots.add(self.ca_der.clone()).unwrap();
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let key = PrivateKeyDer::from(PrivatePkcs8KeyDer::from(self.server.key_der.clone()));
        Arc::new(
            builder
                .with_single_cert(vec![self.server.cert_der.clone()], key)
                .unwrap(),
        )
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// === A TLS terminator in front of a plain TCP service ===

/// Accepts TLS on 127.0.0.1 and forwards the plaintext to `target`; counts
/// completed and failed handshakes.
pub(crate) struct Terminator {
    addr: SocketAddr,
    handshakes: Arc<AtomicUsize>,
    failures: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl Terminator {
    pub(crate) async fn start(target: SocketAddr, config: Arc<ServerConfig>) -> Terminator {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let handshakes = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let (ok, failed, token) = (Arc::clone(&handshakes), Arc::clone(&failures), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = token.cancelled() => return,
                    a = listener.accept() => a,
                };
                let Ok((tcp, _)) = accepted else { return };
                let (acceptor, ok, failed, token) = (
                    acceptor.clone(),
                    Arc::clone(&ok),
                    Arc::clone(&failed),
                    token.clone(),
                );
                tokio::spawn(async move {
                    let mut tls = match acceptor.accept(tcp).await {
                        Ok(tls) => tls,
                        Err(_) => {
                            failed.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    };
                    ok.fetch_add(1, Ordering::SeqCst);
                    let Ok(mut plain) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut tls, &mut plain) => {}
                    }
                });
            }
        });
        Terminator {
            addr,
            handshakes,
            failures,
            stop,
        }
    }

    pub(crate) fn port(&self) -> u16 {
        self.addr.port()
    }

    /// An HTTPS URL for a fake API behind this terminator.
    fn https_url(&self) -> String {
        format!("https://127.0.0.1:{}/api", self.addr.port())
    }

    pub(crate) fn failures(&self) -> usize {
        self.failures.load(Ordering::SeqCst)
    }
}

impl Drop for Terminator {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The broker's address from the test URL.
fn broker_addr() -> SocketAddr {
    let url = url::Url::parse(&amqp_url()).unwrap();
    let host = url.host_str().unwrap();
    let host = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    format!("{host}:{}", url.port().unwrap_or(5672))
        .parse()
        .unwrap()
}

/// `amqps://` through `terminator`, with the test URL's credentials and vhost.
fn amqps_url(terminator: &Terminator) -> String {
    let url = url::Url::parse(&amqp_url()).unwrap();
    let vhost = match url.path() {
        "" | "/" => "/%2f".to_owned(),
        p => p.to_owned(),
    };
    format!(
        "amqps://{}:{}@127.0.0.1:{}{vhost}",
        url.username(),
        url.password().unwrap_or(""),
        terminator.addr.port()
    )
}

/// Two fake APIs, each behind its own HTTPS terminator.
struct HttpsApis {
    user: FakeApi,
    log: FakeApi,
    user_tls: Terminator,
    log_tls: Terminator,
    settings: Vec<(String, String)>,
}

async fn https_apis(pki: &Pki, require_client_cert: bool) -> HttpsApis {
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    let config = pki.server_config(require_client_cert);
    let user_tls = Terminator::start(user.addr, Arc::clone(&config)).await;
    let log_tls = Terminator::start(log.addr, config).await;
    let mut settings = fast_settings(&user, &log);
    settings.retain(|(k, _)| !k.ends_with("_API_URL"));
    settings.push(("BRIDGE_USER_API_URL".into(), user_tls.https_url()));
    settings.push(("BRIDGE_LOG_API_URL".into(), log_tls.https_url()));
    settings.push(("BRIDGE_MAX_ATTEMPTS".into(), "2".into()));
    HttpsApis {
        user,
        log,
        user_tls,
        log_tls,
        settings,
    }
}

fn message(id: &str) -> BasicProperties {
    BasicProperties::default().with_message_id(id.into())
}

// === HTTPS APIs ===

#[tokio::test]
async fn https_api_with_a_private_ca_in_ca_file_is_acked() {
    let pki = Pki::new("https-ok");
    let broker = Broker::new("tls.https.ok").await;
    let apis = https_apis(&pki, false).await;
    let mut settings = apis.settings.clone();
    settings.push(pki.ca_var());
    let worker = Worker::start(&broker, settings).await;
    for i in 0..3 {
        broker
            .publish(br#"{"tls":true}"#, message(&format!("https-{i}")))
            .await;
    }
    worker.wait_settled(3).await;
    assert_eq!(worker.count(Outcome::Acked), 3);
    assert_eq!(apis.user.count(), 3);
    assert_eq!(apis.log.count(), 3);
    worker.stop().await;
}

#[tokio::test]
async fn https_apis_behind_https_proxy_are_reached_through_a_connect_tunnel() {
    let pki = Pki::new("https-proxy");
    let broker = Broker::new("tls.https.proxy").await;
    let apis = https_apis(&pki, false).await;
    let proxy = ConnectProxy::start().await;
    let mut settings = apis.settings.clone();
    settings.push(pki.ca_var());
    settings.push((
        "HTTPS_PROXY".into(),
        format!("http://tunnel%20user:s3cret@{}", proxy.addr),
    ));
    let worker = Worker::start(&broker, settings).await;
    broker
        .publish(br#"{"via":"proxy"}"#, message("proxied-1"))
        .await;
    worker.wait_settled(1).await;
    assert_eq!(worker.count(Outcome::Acked), 1);
    assert_eq!((apis.user.count(), apis.log.count()), (1, 1));
    // One tunnel per API, to the API's own address, with the proxy's
    // credentials; TLS ran end to end through it (the APIs' CA is private).
    let heads = proxy.heads();
    assert_eq!(heads.len(), 2, "{heads:?}");
    for tls in [&apis.user_tls, &apis.log_tls] {
        let line = format!("CONNECT 127.0.0.1:{} HTTP/1.1\r\n", tls.addr.port());
        let head = heads.iter().find(|h| h.starts_with(&line));
        let head = head.unwrap_or_else(|| panic!("no {line:?} in {heads:?}"));
        // base64("tunnel user:s3cret"): the URL's user, percent-decoded.
        assert!(
            head.lines().any(
                |l| l.to_ascii_lowercase().starts_with("proxy-authorization:")
                    && l.ends_with("Basic dHVubmVsIHVzZXI6czNjcmV0")
            ),
            "{head}"
        );
    }
    worker.stop().await;
}

/// An HTTPS API that speaks only HTTP/2 (ALPN `h2`), recording the version
/// and path of each request.
async fn start_http2_api(config: ServerConfig) -> (SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    use hyper::{body::Incoming, service::service_fn, Request, Response};
    let mut config = config;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, record) = (acceptor.clone(), Arc::clone(&record));
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(move |req: Request<Incoming>| {
                    let line = format!("{:?} {}", req.version(), req.uri().path());
                    record.lock().unwrap().push(line);
                    async {
                        Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(
                            bytes::Bytes::from_static(b"{}"),
                        )))
                    }
                });
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn an_https_api_offering_http2_is_called_over_http2() {
    let pki = Pki::new("https-h2");
    let broker = Broker::new("tls.https.h2").await;
    let (addr, seen) = start_http2_api((*pki.server_config(false)).clone()).await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    let mut settings = fast_settings(&user, &log);
    settings.retain(|(k, _)| !k.ends_with("_API_URL"));
    settings.push((
        "BRIDGE_USER_API_URL".into(),
        format!("https://{addr}/users"),
    ));
    settings.push(("BRIDGE_LOG_API_URL".into(), format!("https://{addr}/logs")));
    settings.push(pki.ca_var());
    let worker = Worker::start(&broker, settings).await;
    broker.publish(br#"{"h2":true}"#, message("h2-1")).await;
    worker.wait_settled(1).await;
    assert_eq!(worker.count(Outcome::Acked), 1);
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    assert_eq!(seen, ["HTTP/2.0 /logs", "HTTP/2.0 /users"]);
    worker.stop().await;
}

#[tokio::test]
async fn https_api_with_an_unknown_ca_is_a_transient_failure_never_acked() {
    let pki = Pki::new("https-unknown");
    let other = Pki::new("https-other");
    let broker = Broker::new("tls.https.unknown").await;
    let apis = https_apis(&pki, false).await;
    // Another CA is trusted, not the one that signed the servers' certificates.
    let mut settings = apis.settings.clone();
    settings.push(other.ca_var());
    let worker = Worker::start(&broker, settings).await;
    broker
        .publish(br#"{"tls":false}"#, message("unknown-ca"))
        .await;
    worker.wait_settled(1).await;
    assert_eq!(worker.count(Outcome::Acked), 0);
    assert_eq!(worker.count(Outcome::DeadLettered), 1);
    assert_eq!(apis.user.count(), 0, "no request got through the handshake");
    assert_eq!(apis.log.count(), 0);

    let dead = broker.drain(&broker.dlq).await;
    assert_eq!(dead.len(), 1);
    let d = &dead[0];
    assert_eq!(
        header_text(d, "x-bridge-reason").as_deref(),
        Some("api_failed")
    );
    // Retried: a certificate the worker does not trust is a connection error,
    // transient like any other.
    assert_eq!(header_int(d, "x-bridge-attempts"), Some(2));
    let error = header_text(d, "x-bridge-error").unwrap();
    assert!(error.contains("after 2 attempts"), "{error}");
    assert!(
        error.to_lowercase().contains("certificate"),
        "the error says why: {error}"
    );
    let transient: u64 = ["user-management", "logging"]
        .into_iter()
        .map(|t| {
            worker
                .metrics
                .attempt_count(t, AttemptResult::TransientError)
        })
        .sum();
    assert_eq!(transient, 4, "two attempts per API, all transient");
    worker.stop().await;
}

#[tokio::test]
async fn https_api_requiring_a_client_certificate_works_with_it_and_fails_without() {
    let pki = Pki::new("https-mtls");
    let broker = Broker::new("tls.https.mtls").await;
    let apis = https_apis(&pki, true).await;

    let mut with_cert = apis.settings.clone();
    with_cert.push(pki.ca_var());
    with_cert.extend(pki.client_vars());
    let worker = Worker::start(&broker, with_cert).await;
    broker.publish(br#"{"mtls":1}"#, message("mtls-with")).await;
    worker.wait_settled(1).await;
    assert_eq!(worker.count(Outcome::Acked), 1);
    assert_eq!(apis.user.count(), 1);
    worker.stop().await;

    let mut without_cert = apis.settings.clone();
    without_cert.push(pki.ca_var());
    let worker = Worker::start(&broker, without_cert).await;
    broker
        .publish(br#"{"mtls":2}"#, message("mtls-without"))
        .await;
    worker.wait_settled(1).await;
    assert_eq!(worker.count(Outcome::Acked), 0);
    assert_eq!(worker.count(Outcome::DeadLettered), 1);
    assert_eq!(
        apis.user.count(),
        1,
        "the request without a certificate never arrived"
    );
    let dead = broker.drain(&broker.dlq).await;
    assert_eq!(
        header_text(&dead[0], "x-bridge-reason").as_deref(),
        Some("api_failed")
    );
    assert_eq!(header_int(&dead[0], "x-bridge-attempts"), Some(2));
    worker.stop().await;
}

// === amqps:// through a terminator in front of the real broker ===

/// Starts a worker in this process without waiting for it to be ready.
async fn start_worker(vars: Vec<(String, String)>) -> (app::Worker, TcpListener) {
    let config = RawConfig::from_vars(vars)
        .worker_config()
        .expect("test settings are valid");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    (app::Worker::new(config), listener)
}

#[tokio::test]
async fn amqps_with_a_private_ca_connects_and_consumes() {
    let pki = Pki::new("amqps");
    let broker = Broker::new("tls.amqps").await;
    broker.declare().await;
    let terminator = Terminator::start(broker_addr(), pki.server_config(false)).await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    let mut settings = fast_settings(&user, &log);
    settings.push(("BRIDGE_AMQP_URL".into(), amqps_url(&terminator)));
    settings.push(pki.ca_var());
    let worker = Worker::start(&broker, settings).await;
    broker.publish(br#"{"amqps":1}"#, message("amqps-1")).await;
    worker.wait_settled(1).await;
    assert_eq!(worker.count(Outcome::Acked), 1);
    assert!(terminator.handshakes.load(Ordering::SeqCst) >= 1);
    worker.stop().await;
}

#[tokio::test]
async fn amqps_requiring_a_client_certificate_works_with_it_and_not_without() {
    let pki = Pki::new("amqps-mtls");
    let broker = Broker::new("tls.amqps.mtls").await;
    broker.declare().await;
    let terminator = Terminator::start(broker_addr(), pki.server_config(true)).await;
    let (user, log) = (FakeApi::start().await, FakeApi::start().await);
    let mut base = broker.vars();
    base.extend(fast_settings(&user, &log));
    base.push(("BRIDGE_AMQP_URL".into(), amqps_url(&terminator)));
    base.push(pki.ca_var());

    // Without the certificate: the handshake is refused, the worker keeps
    // retrying, never consumes, and the message stays in the queue.
    broker
        .publish(br#"{"amqps":2}"#, message("amqps-mtls"))
        .await;
    let (app, listener) = start_worker(base.clone()).await;
    let health = app.health().clone();
    let stop = CancellationToken::new();
    let task = tokio::spawn(app.run(listener, stop.clone()));
    wait_until(
        "the terminator refused a client without a certificate",
        Duration::from_secs(15),
        || {
            let n = terminator.failures();
            async move { n >= 1 }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !health.is_ready(),
        "no broker session without a certificate"
    );
    assert_eq!(user.count(), 0);
    assert_eq!(broker.depth(&broker.queue).await, 1);
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("the worker stops while reconnecting")
        .unwrap()
        .unwrap();

    // With it: connects and consumes.
    let mut with_cert = base;
    with_cert.extend(pki.client_vars());
    let config = RawConfig::from_vars(with_cert).worker_config().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = app::Worker::new(config);
    let metrics = app.metrics().clone();
    let stop = CancellationToken::new();
    let task = tokio::spawn(app.run(listener, stop.clone()));
    wait_until(
        "the held-back message is acked",
        Duration::from_secs(20),
        || {
            let n = metrics.outcome_count(Outcome::Acked);
            async move { n == 1 }
        },
    )
    .await;
    assert_eq!(user.count(), 1);
    stop.cancel();
    task.await.unwrap().unwrap();
}

// === Bad files: exit 2 naming the variable, before anything connects ===

async fn run_expecting_exit_2(vars: Vec<(String, String)>, variable: &str) -> String {
    let mut all = vec![
        (
            "BRIDGE_USER_API_URL".to_owned(),
            "https://127.0.0.1:1/u".to_owned(),
        ),
        (
            "BRIDGE_LOG_API_URL".to_owned(),
            "https://127.0.0.1:1/l".to_owned(),
        ),
        // Nothing listens here: exit 2 must come before any connection.
        (
            "BRIDGE_AMQP_URL".to_owned(),
            format!("amqp://127.0.0.1:{}", free_port()),
        ),
        ("BRIDGE_METRICS_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
    ];
    all.extend(vars);
    let (code, _out, err) = run_bin(&["run"], &all, b"").await;
    assert_eq!(code, 2, "{variable}: {err}");
    assert!(err.contains(variable), "names {variable}: {err}");
    assert!(!err.contains("PRIVATE KEY"), "no key material: {err}");
    assert!(!err.contains("broker"), "nothing connected: {err}");
    err
}

#[tokio::test]
async fn bad_tls_files_exit_2_naming_the_variable() {
    let pki = Pki::new("files");
    let other = Pki::new("files-other");
    let not_pem = pki.write("not.pem", "this is not a certificate\n");
    let missing = pki.path("missing.pem");
    let var = |k: &str, v: &str| (k.to_owned(), v.to_owned());

    let err = run_expecting_exit_2(vec![var("BRIDGE_CA_FILE", &missing)], "BRIDGE_CA_FILE").await;
    assert!(err.contains("cannot read"), "{err}");
    let err = run_expecting_exit_2(vec![var("BRIDGE_CA_FILE", &not_pem)], "BRIDGE_CA_FILE").await;
    assert!(err.contains("no PEM certificate"), "{err}");
    run_expecting_exit_2(
        vec![
            var("BRIDGE_TLS_CERT_FILE", &not_pem),
            var("BRIDGE_TLS_KEY_FILE", &pki.path("client.key")),
        ],
        "BRIDGE_TLS_CERT_FILE",
    )
    .await;
    run_expecting_exit_2(
        vec![
            var("BRIDGE_TLS_CERT_FILE", &pki.path("client.pem")),
            var("BRIDGE_TLS_KEY_FILE", &not_pem),
        ],
        "BRIDGE_TLS_KEY_FILE",
    )
    .await;
    // The key of another certificate.
    let err = run_expecting_exit_2(
        vec![
            var("BRIDGE_TLS_CERT_FILE", &pki.path("client.pem")),
            var("BRIDGE_TLS_KEY_FILE", &other.path("client.key")),
        ],
        "BRIDGE_TLS_KEY_FILE",
    )
    .await;
    assert!(err.contains("does not match"), "{err}");
    // A certificate without its key, and a key without its certificate.
    let err = run_expecting_exit_2(
        vec![var("BRIDGE_TLS_CERT_FILE", &pki.path("client.pem"))],
        "BRIDGE_TLS_KEY_FILE",
    )
    .await;
    assert!(err.contains("BRIDGE_TLS_CERT_FILE"), "{err}");
    run_expecting_exit_2(
        vec![var("BRIDGE_TLS_KEY_FILE", &pki.path("client.key"))],
        "BRIDGE_TLS_CERT_FILE",
    )
    .await;
    // The DLQ tools and publish read the same files (amqps:// needs them).
    let (code, _, err) = run_bin(&["dlq", "stats"], &[var("BRIDGE_CA_FILE", &not_pem)], b"").await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("BRIDGE_CA_FILE"), "{err}");
}

// === The platform's roots are the base ===

/// A CA installed on the host is trusted with no setting: the worker (as a
/// process) gets its roots from the platform store (rustls-native-certs,
/// which `SSL_CERT_FILE` points elsewhere), for the APIs and for amqps://.
#[tokio::test]
async fn a_ca_in_the_platform_store_is_trusted_without_ca_file() {
    let pki = Pki::new("platform");
    let broker = Broker::new("tls.platform").await;
    broker.declare().await;
    let apis = https_apis(&pki, false).await;
    let terminator = Terminator::start(broker_addr(), pki.server_config(false)).await;
    let mut settings = apis.settings.clone();
    settings.push(("BRIDGE_AMQP_URL".into(), amqps_url(&terminator)));
    settings.push(("SSL_CERT_FILE".into(), pki.path("ca.pem")));
    let worker = Process::start(&broker, settings).await;
    broker
        .publish(br#"{"platform":1}"#, message("platform-1"))
        .await;
    wait_until("the message is acked", Duration::from_secs(20), || async {
        worker
            .metric("bridge_messages_total{outcome=\"acked\"}")
            .await
            == 1.0
    })
    .await;
    assert_eq!(apis.user.count(), 1);
    assert_eq!(apis.log.count(), 1);
    assert!(terminator.handshakes.load(Ordering::SeqCst) >= 1);
}

/// A TCP forwarder whose `freeze` turns every connection open at that moment
/// into a black hole (open, nothing forwarded either way), as a peer or NAT
/// that vanished silently would; later connections are forwarded.
struct Freezer {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    frozen: Arc<std::sync::Mutex<Vec<Arc<std::sync::atomic::AtomicBool>>>>,
    accept: tokio::task::AbortHandle,
}

impl Freezer {
    async fn start(target: SocketAddr) -> Freezer {
        use std::sync::atomic::AtomicBool;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let frozen: Arc<std::sync::Mutex<Vec<Arc<AtomicBool>>>> = Arc::default();
        let (count, flags) = (Arc::clone(&connections), Arc::clone(&frozen));
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                    continue;
                };
                let flag = Arc::new(AtomicBool::new(false));
                flags.lock().unwrap().push(Arc::clone(&flag));
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                for (mut from, mut to, flag) in [
                    (
                        Box::new(ri) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                        Box::new(wo) as Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
                        Arc::clone(&flag),
                    ),
                    (Box::new(ro), Box::new(wi), flag),
                ] {
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        while let Ok(n @ 1..) = from.read(&mut buf).await {
                            if !flag.load(Ordering::SeqCst)
                                && to.write_all(&buf[..n]).await.is_err()
                            {
                                return;
                            }
                        }
                        // Frozen: the other side never learns of the close.
                        if flag.load(Ordering::SeqCst) {
                            std::future::pending::<()>().await;
                        }
                    });
                }
            }
        });
        Freezer {
            addr,
            connections,
            frozen,
            accept: accept.abort_handle(),
        }
    }

    fn freeze(&self) {
        for flag in self.frozen.lock().unwrap().iter() {
            flag.store(true, Ordering::SeqCst);
        }
    }
}

impl Drop for Freezer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

#[tokio::test]
async fn an_http2_connection_that_went_silent_is_replaced_within_seconds() {
    let pki = Pki::new("https-h2-ping");
    let broker = Broker::new("tls.https.h2ping").await;
    let (api, seen) = start_http2_api((*pki.server_config(false)).clone()).await;
    let freezer = Freezer::start(api).await;
    let log = FakeApi::start().await;
    let mut settings = vec![
        (
            "BRIDGE_USER_API_URL".to_owned(),
            format!("https://{}/users", freezer.addr),
        ),
        ("BRIDGE_LOG_API_URL".to_owned(), log.url()),
        // Far beyond the test: only the pings can free the stuck request.
        ("BRIDGE_HTTP_TIMEOUT_MS".to_owned(), "120000".to_owned()),
        ("BRIDGE_MAX_ATTEMPTS".to_owned(), "2".to_owned()),
        ("BRIDGE_RETRY_BACKOFF_MS".to_owned(), "20".to_owned()),
        ("BRIDGE_SHUTDOWN_GRACE_MS".to_owned(), "5000".to_owned()),
    ];
    settings.push(pki.ca_var());
    let worker = Worker::start(&broker, settings).await;
    broker.publish(b"{}", message("h2-ping-1")).await;
    worker.wait_settled(1).await;
    assert_eq!(worker.count(Outcome::Acked), 1);

    freezer.freeze();
    let started = std::time::Instant::now();
    broker.publish(b"{}", message("h2-ping-2")).await;
    wait_until(
        "the second message is acked over a new connection",
        Duration::from_secs(20),
        || {
            let acked = worker.count(Outcome::Acked);
            async move { acked == 2 }
        },
    )
    .await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert_eq!(freezer.connections.load(Ordering::SeqCst), 2);
    assert_eq!(seen.lock().unwrap().len(), 2);
    worker.stop().await;
}

// === fanout-bridge check ===

/// `check` shakes hands with each https:// target as the worker would: the
/// private CA from BRIDGE_CA_FILE trusted, through HTTPS_PROXY's tunnel; an
/// untrusted certificate fails the TLS line alone.
#[tokio::test]
async fn check_verifies_https_targets_with_ca_file_and_through_the_proxy() {
    let pki = Pki::new("check");
    let broker = Broker::new("tls.check").await;
    let apis = https_apis(&pki, false).await;
    let proxy = ConnectProxy::start().await;
    let mut settings = broker.vars();
    settings.extend(apis.settings.clone());
    settings.push(pki.ca_var());
    settings.push((
        "HTTPS_PROXY".into(),
        format!("http://user:proxy-pw@{}", proxy.addr),
    ));
    let (code, stdout, stderr) = run_bin(&["check"], &settings, b"").await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    for target in ["user-management", "logging"] {
        let tls = stdout
            .lines()
            .find(|l| l.contains(&format!("target {target} tls:")))
            .unwrap_or_else(|| panic!("no TLS line for {target}: {stdout}"));
        assert!(tls.starts_with("ok") && tls.contains("verified"), "{tls}");
        let tcp = stdout
            .lines()
            .find(|l| l.contains(&format!("target {target} tcp:")))
            .unwrap();
        assert!(tcp.contains(&format!("proxy at {}", proxy.addr)), "{tcp}");
    }
    assert!(!stdout.contains("proxy-pw"), "{stdout}");
    let tunnels = proxy
        .heads()
        .iter()
        .filter(|h| h.starts_with(&format!("CONNECT 127.0.0.1:{} ", apis.user_tls.addr.port())))
        .count();
    assert!(tunnels >= 1, "{:?}", proxy.heads());
    assert_eq!(apis.user.count() + apis.log.count(), 0, "no request sent");

    // Without the CA the handshake fails, and says why.
    settings.retain(|(k, _)| k != "BRIDGE_CA_FILE" && k != "HTTPS_PROXY");
    let (code, stdout, _) = run_bin(&["check"], &settings, b"").await;
    assert_eq!(code, 1, "{stdout}");
    let tls = stdout
        .lines()
        .find(|l| l.contains("target logging tls:"))
        .unwrap();
    assert!(tls.starts_with("FAIL"), "{tls}");
    assert!(tls.to_lowercase().contains("certificate"), "{tls}");
    let tcp = stdout
        .lines()
        .find(|l| l.contains("target logging tcp:"))
        .unwrap();
    assert!(tcp.starts_with("ok"), "{tcp}");
}
