//! TLS settings shared by the HTTPS APIs and `amqps://`: extra trusted CAs
//! (`BRIDGE_CA_FILE`) on top of the platform's roots, and a client certificate
//! (`BRIDGE_TLS_CERT_FILE` + `BRIDGE_TLS_KEY_FILE`) for mutual TLS.
//!
//! The files are read and checked once, at start, before anything connects:
//! [`load`] turns three optional paths into a validated [`TlsSettings`], which
//! then configures the HTTP client ([`TlsSettings::http`]) and the lapin
//! connection ([`TlsSettings::amqp`]). Both start from the platform's roots
//! (rustls-native-certs), not from a bundled copy, so a CA installed on the
//! host works with no setting.

use std::{fmt, sync::Arc};

use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use rustls::{crypto::ring, sign::CertifiedKey, RootCertStore};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

pub const CA_FILE: &str = "BRIDGE_CA_FILE";
pub const CERT_FILE: &str = "BRIDGE_TLS_CERT_FILE";
pub const KEY_FILE: &str = "BRIDGE_TLS_KEY_FILE";

/// Validated TLS material. Cheap to clone; its `Debug` shows no key.
#[derive(Clone, Default)]
pub struct TlsSettings {
    inner: Option<Arc<Material>>,
}

#[derive(Default)]
struct Material {
    /// The extra trust anchors: the PEM text of `BRIDGE_CA_FILE` (lapin wants
    /// PEM text) and the parsed certificates (for the HTTP client).
    ca_pem: Option<String>,
    ca_certs: Vec<CertificateDer<'static>>,
    identity: Option<ClientIdentity>,
}

/// A client certificate chain and its key, both as PEM.
struct ClientIdentity {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.inner.as_deref();
        f.debug_struct("TlsSettings")
            .field("extra_cas", &m.map_or(0, |m| m.ca_certs.len()))
            .field(
                "client_certificate",
                &m.is_some_and(|m| m.identity.is_some()),
            )
            .finish()
    }
}

/// Reads and checks the TLS files. `None` (or an empty string) means unset.
///
/// # Errors
/// One line per bad variable, naming it: a file that cannot be read, holds no
/// PEM certificate (or key), a key that does not match the certificate, or a
/// certificate without a key (and the reverse). No line contains key material.
pub fn load(
    ca_file: Option<&str>,
    cert_file: Option<&str>,
    key_file: Option<&str>,
) -> Result<TlsSettings, Vec<String>> {
    let mut problems = Vec::new();
    let mut material = Material::default();
    if let Some(path) = ca_file {
        match load_cas(path) {
            Ok((pem, certs)) => {
                material.ca_pem = Some(pem);
                material.ca_certs = certs;
            }
            Err(e) => problems.push(format!("{CA_FILE}={path:?}: {e}")),
        }
    }
    match (cert_file, key_file) {
        (None, None) => {}
        (Some(_), None) => problems.push(format!(
            "{CERT_FILE} is set but {KEY_FILE} is not: a client certificate needs its key"
        )),
        (None, Some(_)) => problems.push(format!(
            "{KEY_FILE} is set but {CERT_FILE} is not: a client key needs its certificate"
        )),
        (Some(cert), Some(key)) => match load_identity(cert, key) {
            Ok(identity) => material.identity = Some(identity),
            Err(e) => problems.push(e),
        },
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    if material.ca_pem.is_none() && material.identity.is_none() {
        return Ok(TlsSettings::default());
    }
    Ok(TlsSettings {
        inner: Some(Arc::new(material)),
    })
}

fn read(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read the file ({e})"))
}

fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("is not valid PEM ({e})"))?;
    if certs.is_empty() {
        return Err("contains no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    Ok(certs)
}

fn load_cas(path: &str) -> Result<(String, Vec<CertificateDer<'static>>), String> {
    let bytes = read(path)?;
    let certs = certificates(&bytes)?;
    let mut store = RootCertStore::empty();
    for (i, cert) in certs.iter().enumerate() {
        store
            .add(cert.clone())
            .map_err(|e| format!("certificate {} is not usable as a CA ({e})", i + 1))?;
    }
    let pem = String::from_utf8(bytes).map_err(|_| "is not PEM text (not UTF-8)".to_owned())?;
    Ok((pem, certs))
}

fn load_identity(cert_path: &str, key_path: &str) -> Result<ClientIdentity, String> {
    let cert_pem = read(cert_path).map_err(|e| format!("{CERT_FILE}={cert_path:?}: {e}"))?;
    let certs = certificates(&cert_pem).map_err(|e| format!("{CERT_FILE}={cert_path:?}: {e}"))?;
    let key_pem = read(key_path).map_err(|e| format!("{KEY_FILE}={key_path:?}: {e}"))?;
    // The parser's own error is not shown: it could quote part of the key.
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
        format!("{KEY_FILE}={key_path:?}: contains no PEM private key (PKCS#8, PKCS#1 or SEC1)")
    })?;
    CertifiedKey::from_der(certs, key, &ring::default_provider()).map_err(|e| {
        format!(
            "{KEY_FILE}={key_path:?}: the key does not match the certificate in \
             {CERT_FILE}={cert_path:?} or is not usable ({e})"
        )
    })?;
    Ok(ClientIdentity { cert_pem, key_pem })
}

impl TlsSettings {
    /// True when no TLS variable is set.
    pub fn is_default(&self) -> bool {
        self.inner.is_none()
    }

    /// The TLS configuration of the HTTPS APIs: the platform's roots plus the
    /// extra CAs, the client certificate when set. The connector sets ALPN
    /// (HTTP/2 and HTTP/1.1; the server picks).
    ///
    /// # Errors
    /// When rustls refuses material that [`load`] accepted (not expected).
    pub fn http(&self) -> anyhow::Result<rustls::ClientConfig> {
        let mut roots = platform_roots();
        let m = self.inner.as_deref();
        for cert in m.map(|m| m.ca_certs.as_slice()).unwrap_or_default() {
            roots.add(cert.clone())?;
        }
        let builder = client_builder()?.with_root_certificates(roots);
        let config = match m.and_then(|m| m.identity.as_ref()) {
            None => builder.with_no_client_auth(),
            Some(id) => {
                let certs = certificates(&id.cert_pem).map_err(anyhow::Error::msg)?;
                // The parser's own error could quote part of the key.
                let key = PrivateKeyDer::from_pem_slice(&id.key_pem)
                    .map_err(|_| anyhow::anyhow!("{KEY_FILE}: not usable by the HTTP client"))?;
                builder.with_client_auth_cert(certs, key).map_err(|_| {
                    anyhow::anyhow!("{CERT_FILE}/{KEY_FILE}: not usable by the HTTP client")
                })?
            }
        };
        Ok(config)
    }

    /// The TLS configuration of an `amqps://` connection (ignored by lapin for
    /// `amqp://`).
    pub fn amqp(&self) -> OwnedTLSConfig {
        let Some(m) = self.inner.as_deref() else {
            return OwnedTLSConfig::default();
        };
        OwnedTLSConfig {
            identity: m.identity.as_ref().map(|id| OwnedIdentity::PKCS8 {
                pem: id.cert_pem.clone(),
                key: id.key_pem.clone(),
            }),
            cert_chain: m.ca_pem.clone(),
        }
    }
}

/// The platform's trust anchors (rustls-native-certs).
pub fn platform_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    // Platform stores often hold a few certificates rustls cannot parse
    // (ancient roots without extensions): skipped, as browsers do.
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    roots
}

/// Reads a PEM file of CA certificates, each checked as a trust anchor. The
/// error does not name a variable: the caller knows which one it read.
///
/// # Errors
/// A file that cannot be read, holds no PEM certificate, or a certificate
/// rustls cannot use as a CA.
pub fn read_cas(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    load_cas(path).map(|(_, certs)| certs)
}

/// A client configuration trusting exactly `roots`, with no client
/// certificate; ring, TLS 1.2 and 1.3, as for the APIs.
///
/// # Errors
/// When rustls refuses the protocol versions (not expected).
pub fn client_config(roots: RootCertStore) -> Result<rustls::ClientConfig, rustls::Error> {
    Ok(client_builder()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn client_builder(
) -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>, rustls::Error> {
    rustls::ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_set_is_the_default() {
        let t = load(None, None, None).unwrap();
        assert!(t.is_default());
        assert!(t.amqp().identity.is_none() && t.amqp().cert_chain.is_none());
    }

    #[test]
    fn missing_and_unpaired_files_are_named() {
        let e = load(Some("/nonexistent/ca.pem"), Some("/x.pem"), None).unwrap_err();
        assert!(e[0].contains(CA_FILE), "{e:?}");
        assert!(e[1].contains(KEY_FILE) && e[1].contains(CERT_FILE), "{e:?}");
        let e = load(None, None, Some("/k.pem")).unwrap_err();
        assert!(e[0].starts_with(KEY_FILE), "{e:?}");
    }

    #[test]
    fn a_file_without_pem_is_refused() {
        let path = std::env::temp_dir().join(format!("bridge-tls-{}.txt", std::process::id()));
        std::fs::write(&path, "hello, not a certificate\n").unwrap();
        let e = load(path.to_str(), None, None).unwrap_err();
        let _ = std::fs::remove_file(&path);
        assert!(
            e[0].contains(CA_FILE) && e[0].contains("no PEM certificate"),
            "{e:?}"
        );
    }
}
