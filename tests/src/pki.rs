//! Certificates made for a test: a CA, a server certificate for `localhost` and `127.0.0.1`,
//! and a client certificate for mutual TLS, all signed by that CA, written as PEM files.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A client certificate from a CA the coordinator does not trust.
    pub stranger_cert: PathBuf,
    pub stranger_key: PathBuf,
}

fn ca(name: &str) -> (CertificateParams, KeyPair, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().expect("a CA key");
    let pem = params.self_signed(&key).expect("a CA certificate").pem();
    (params, key, pem)
}

fn leaf(names: &[&str], issuer: &Issuer<'_, KeyPair>) -> (String, String) {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(names.clone()).expect("leaf params");
    params
        .distinguished_name
        .push(DnType::CommonName, names[0].clone());
    let key = KeyPair::generate().expect("a key");
    let cert = params
        .signed_by(&key, issuer)
        .expect("a signed certificate");
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).expect("pki dir");
        let write = |name: &str, pem: &str| {
            let p = dir.join(name);
            std::fs::write(&p, pem).expect("write a PEM file");
            p
        };
        let (params, key, ca_pem) = ca("drover test CA");
        let issuer = Issuer::new(params, key);
        let (server, server_key) = leaf(&["localhost", "127.0.0.1"], &issuer);
        let (client, client_key) = leaf(&["agent.drover.test"], &issuer);
        let (sparams, skey, _) = ca("someone else's CA");
        let stranger_issuer = Issuer::new(sparams, skey);
        let (stranger, stranger_key) = leaf(&["stranger.test"], &stranger_issuer);
        Pki {
            ca: write("ca.pem", &ca_pem),
            server_cert: write("server.pem", &server),
            server_key: write("server-key.pem", &server_key),
            client_cert: write("client.pem", &client),
            client_key: write("client-key.pem", &client_key),
            stranger_cert: write("stranger.pem", &stranger),
            stranger_key: write("stranger-key.pem", &stranger_key),
        }
    }
}
