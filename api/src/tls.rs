//! TLS for every listener of `allot serve` (docs/reference.md#server-settings).
//!
//! `api.tls_cert` and `api.tls_key` are read once, at start, into one rustls
//! server configuration; each listener takes it with the application
//! protocols it speaks (ALPN): `http/1.1` for the HTTP API, `h2` for Flight
//! SQL's gRPC, none for the PostgreSQL wire, whose clients ask for TLS in the
//! protocol itself. A certificate or key that cannot be read refuses to
//! start, naming the key.
//!
//! The crypto provider is named (ring) rather than left to rustls: other
//! crates in the build enable aws-lc too, and with two providers compiled in
//! rustls will not choose one by itself.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use allot_schemas::config::ApiConfig;
use futures::Stream;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::error::ApiError;

/// The application protocol of the HTTP API.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// The application protocol of gRPC (Flight SQL).
pub const ALPN_H2: &[u8] = b"h2";

/// The server's certificate and key, ready to accept connections.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerTls")
    }
}

impl ServerTls {
    /// The TLS of `[api]`: `None` when `api.tls_cert` is unset (the
    /// configuration's check makes the two keys go together).
    pub fn from_config(api: &ApiConfig) -> Result<Option<ServerTls>, ApiError> {
        let (Some(cert), Some(key)) = (&api.tls_cert, &api.tls_key) else {
            return Ok(None);
        };
        ServerTls::load(Path::new(cert), Path::new(key)).map(Some)
    }

    /// Reads a PEM certificate chain and its private key.
    pub fn load(cert: &Path, key: &Path) -> Result<ServerTls, ApiError> {
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| setup("api.tls_cert", cert, e))?;
        if chain.is_empty() {
            return Err(setup("api.tls_cert", cert, "no certificate in the file"));
        }
        let private_key =
            PrivateKeyDer::from_pem_file(key).map_err(|e| setup("api.tls_key", key, e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| setup("api.tls_cert", cert, e))?
            .with_no_client_auth()
            .with_single_cert(chain, private_key)
            .map_err(|e| setup("api.tls_key", key, e))?;
        Ok(ServerTls {
            config: Arc::new(config),
        })
    }

    /// An acceptor offering `protocols` by ALPN (none: the client's choice is
    /// not checked).
    pub fn acceptor(&self, protocols: &[&[u8]]) -> TlsAcceptor {
        let mut config = ServerConfig::clone(&self.config);
        config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
        TlsAcceptor::from(Arc::new(config))
    }
}

/// The TLS connections of `listener`, as a stream for a server that takes
/// its connections from one (Flight SQL's gRPC). Each handshake runs on its
/// own task and must end within `handshake_timeout`, so a client that stalls
/// in it holds no other back; failed handshakes are logged and skipped. The
/// stream ends when its consumer drops it.
pub fn incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
) -> impl Stream<Item = io::Result<TlsStream<TcpStream>>> + Send + 'static {
    let (ready, connections) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let (stream, peer) = tokio::select! {
                () = ready.closed() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors: wait a moment rather than spin.
                        tracing::warn!(%error, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let acceptor = acceptor.clone();
            let ready = ready.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let _ = ready.send(Ok(stream)).await;
                    }
                    Ok(Err(error)) => tracing::debug!(%error, %peer, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    futures::stream::unfold(connections, |mut connections| async move {
        connections
            .recv()
            .await
            .map(|connection| (connection, connections))
    })
}

/// The start-up error of an unreadable certificate or key.
fn setup(key: &'static str, path: &Path, error: impl std::fmt::Display) -> ApiError {
    ApiError::Setup {
        key,
        message: format!("{}: {error}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_certificate_names_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("server.pem");
        let key = dir.path().join("server.key");
        std::fs::write(&cert, "not a certificate").unwrap();
        std::fs::write(&key, "not a key").unwrap();
        let refused = |cert: &Path, key: &Path| match ServerTls::load(cert, key) {
            Err(ApiError::Setup { key, .. }) => key,
            other => panic!("expected a setup error, got {other:?}"),
        };
        assert_eq!(refused(&cert, &key), "api.tls_cert");
        assert_eq!(
            refused(&dir.path().join("missing.pem"), &key),
            "api.tls_cert"
        );
    }
}
