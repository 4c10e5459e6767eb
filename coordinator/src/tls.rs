//! TLS for both ports, through rustls: the coordinator's certificate and key, and for mutual
//! TLS the CA that agents' client certificates must chain to. With TLS on, plain text is
//! refused (a plain-text client fails the handshake).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::error::CoordError;

#[derive(Clone, Debug)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Mutual TLS: agents must present a certificate this CA signed to connect. Other clients
    /// (the main job, operators, the HTTP port's probes and cache) may, and authenticate by
    /// token either way; a certificate that does not chain to this CA is refused at the
    /// handshake.
    pub client_ca: Option<PathBuf>,
}

/// The loaded certificates, for each port.
pub struct ServerTls {
    pub grpc: ServerTlsConfig,
    pub http: Arc<rustls::ServerConfig>,
    /// Agents must present a client certificate (mutual TLS).
    pub agents_need_certificates: bool,
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, CoordError> {
    std::fs::read(path).map_err(|e| CoordError::Tls(format!("{what} {}: {e}", path.display())))
}

impl TlsConfig {
    pub fn load(&self) -> Result<ServerTls, CoordError> {
        let cert = read(&self.cert, "--tls-cert")?;
        let key = read(&self.key, "--tls-key")?;
        let mut grpc = ServerTlsConfig::new().identity(Identity::from_pem(&cert, &key));
        let bad = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
            CoordError::Tls(format!("{what} {}: {e}", path.display()))
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert)
            .collect::<Result<_, _>>()
            .map_err(|e| bad("--tls-cert", &self.cert, &e))?;
        if chain.is_empty() {
            return Err(bad("--tls-cert", &self.cert, &"no PEM certificate in it"));
        }
        let private =
            PrivateKeyDer::from_pem_slice(&key).map_err(|e| bad("--tls-key", &self.key, &e))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| CoordError::Tls(e.to_string()))?;
        let builder = match &self.client_ca {
            Some(ca_path) => {
                let ca = read(ca_path, "--tls-client-ca")?;
                grpc = grpc
                    .client_ca_root(Certificate::from_pem(&ca))
                    .client_auth_optional(true);
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_slice_iter(&ca) {
                    let c = c.map_err(|e| bad("--tls-client-ca", ca_path, &e))?;
                    roots
                        .add(c)
                        .map_err(|e| bad("--tls-client-ca", ca_path, &e))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .allow_unauthenticated()
                .build()
                .map_err(|e| bad("--tls-client-ca", ca_path, &e))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut http = builder
            .with_single_cert(chain, private)
            .map_err(|e| bad("--tls-cert", &self.cert, &e))?;
        http.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls {
            grpc,
            http: Arc::new(http),
            agents_need_certificates: self.client_ca.is_some(),
        })
    }
}
