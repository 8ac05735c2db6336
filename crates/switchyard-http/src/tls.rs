//! TLS (S1): the rustls configuration every outbound call uses. Certificates are always
//! verified; extra trust roots come only from configured PEM files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::ring;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::client::BuildError;
use crate::settings::ClientIdentity;

/// Installs rustls' ring provider as the process default, for libraries (such as servers in
/// tests) that ask rustls for the default. Idempotent: an already installed provider stays.
pub fn install_crypto_provider() {
    // Err only means a provider is already installed, which is what we want.
    let _ = ring::default_provider().install_default();
}

/// The client configuration: webpki roots plus each CA file, ring, HTTP/1.1 and, when
/// `http2`, HTTP/2 first.
pub(crate) fn client_config(
    ca_files: &[PathBuf],
    identity: Option<&ClientIdentity>,
    http2: bool,
) -> Result<ClientConfig, BuildError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for path in ca_files {
        add_ca_file(&mut roots, path)?;
    }
    // The provider is passed explicitly so the client works whether or not a process
    // default was installed.
    let builder = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(id) => {
            let (chain, key) = read_identity(id)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| BuildError::ClientIdentity {
                    path: id.key_file.clone(),
                    reason: e.to_string(),
                })?
        }
    };
    // A preconfigured config gets no ALPN from reqwest: the protocols offered are these.
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(config)
}

fn add_ca_file(roots: &mut RootCertStore, path: &Path) -> Result<(), BuildError> {
    let pem = std::fs::read(path).map_err(|source| BuildError::ReadCaFile {
        path: path.to_owned(),
        source,
    })?;
    let invalid = |reason: String| BuildError::InvalidCertificate {
        path: path.to_owned(),
        reason,
    };
    let mut added = 0usize;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| invalid(e.to_string()))?;
        roots.add(cert).map_err(|e| invalid(e.to_string()))?;
        added += 1;
    }
    if added == 0 {
        return Err(BuildError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(())
}

/// The certificate chain and key of a client identity.
fn read_identity(
    id: &ClientIdentity,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), BuildError> {
    let bad = |path: &Path, reason: String| BuildError::ClientIdentity {
        path: path.to_owned(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(&id.cert_file)
        .map_err(|e| bad(&id.cert_file, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&id.cert_file, e.to_string()))?;
    if chain.is_empty() {
        return Err(bad(&id.cert_file, "no PEM certificate in it".into()));
    }
    let key =
        PrivateKeyDer::from_pem_file(&id.key_file).map_err(|e| bad(&id.key_file, e.to_string()))?;
    Ok((chain, key))
}
