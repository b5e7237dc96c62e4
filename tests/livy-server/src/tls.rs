//! HTTPS: a CA made fresh at every start, a leaf certificate it signs for the loopback names, and
//! a listener that completes TLS handshakes off the accept loop (a client that stalls its
//! handshake holds up no one else).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::debug;

/// The names the leaf certificate is valid for.
pub const NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];
/// How long a client may take over its handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// A server identity: the CA clients should trust and the server side of TLS.
pub struct Identity {
    pub ca_pem: String,
    pub config: Arc<ServerConfig>,
}

/// A fresh CA and a leaf certificate it signed for [`NAMES`], served over TLS 1.2 and 1.3 with
/// `ring`, HTTP/1.1 only (the only protocol the server speaks).
pub fn generate() -> Result<Identity, String> {
    let fail = |e: rcgen::Error| format!("cannot make the test CA: {e}");
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    (ca.distinguished_name).push(DnType::CommonName, "livy-server test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().map_err(fail)?;
    let ca_pem = ca.self_signed(&ca_key).map_err(fail)?.pem();
    let issuer = Issuer::new(ca, ca_key);

    let names: Vec<String> = NAMES.iter().map(|n| n.to_string()).collect();
    let mut leaf = CertificateParams::new(names).map_err(fail)?;
    (leaf.distinguished_name).push(DnType::CommonName, "localhost");
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    let leaf_key = KeyPair::generate().map_err(fail)?;
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).map_err(fail)?;

    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| {
            b.with_no_client_auth()
                .with_single_cert(vec![leaf_cert.der().clone()], key)
        })
        .map_err(|e| format!("cannot configure TLS: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Identity {
        ca_pem,
        config: Arc::new(config),
    })
}

/// Accepts TCP connections and hands on those whose TLS handshake succeeded.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    addr: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `tcp`; the accept loop ends when the listener is dropped.
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> io::Result<Self> {
        let addr = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    _ = tx.closed() => return,
                    accepted = tcp.accept() => match accepted {
                        Ok(conn) => conn,
                        Err(e) => {
                            // Out of descriptors and the like: back off as axum::serve does.
                            debug!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { ready, addr })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop only ends once this listener is gone.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;
    use rustls::pki_types::pem::PemObject;
    use rustls::{ClientConfig, RootCertStore};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::TlsConnector;

    fn client(ca_pem: &str) -> TlsConnector {
        let mut roots = RootCertStore::empty();
        let ca =
            rustls::pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("CA PEM");
        roots.add(ca).expect("CA accepted");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocols")
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    }

    #[tokio::test]
    async fn the_leaf_is_trusted_through_the_ca_for_every_loopback_name() {
        let identity = generate().expect("identity");
        assert!(identity.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = tcp.local_addr().expect("addr");
        let mut listener = TlsListener::new(tcp, identity.config.clone()).expect("listener");
        tokio::spawn(async move {
            use axum::serve::Listener;
            loop {
                let (mut tls, _) = listener.accept().await;
                let _ = tls.write_all(b"hello").await;
                let _ = tls.shutdown().await;
            }
        });
        let connector = client(&identity.ca_pem);
        for name in NAMES {
            let server_name = ServerName::try_from(name).expect("name");
            let tcp = TcpStream::connect(addr).await.expect("connect");
            let mut tls = connector
                .connect(server_name.to_owned(), tcp)
                .await
                .unwrap_or_else(|e| panic!("handshake as {name}: {e}"));
            let mut got = String::new();
            tls.read_to_string(&mut got).await.expect("read");
            assert_eq!(got, "hello");
        }
        // Another CA's clients do not trust it, and their failed handshake stops no one.
        let other = generate().expect("identity");
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let name = ServerName::try_from("localhost").expect("name");
        assert!(client(&other.ca_pem).connect(name, tcp).await.is_err());
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let name = ServerName::try_from("localhost").expect("name");
        assert!(connector.connect(name, tcp).await.is_ok());
    }
}
