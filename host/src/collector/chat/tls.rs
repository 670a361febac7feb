//! TLS client configuration shared by the chat platforms: the system's root certificates
//! plus the collector's `ca_file` (a private CA), with the process's `ring` provider.

use std::path::Path;

use anyhow::Context as _;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

/// The trusted roots: the system's (those it cannot parse are skipped) plus every
/// certificate in `ca_file`.
pub(crate) fn roots(ca_file: Option<&Path>) -> anyhow::Result<rustls::RootCertStore> {
    crate::access::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(file) = ca_file {
        let pem = std::fs::read(file).with_context(|| format!("cannot read ca_file {}", file.display()))?;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok).collect();
        if certs.is_empty() {
            anyhow::bail!("ca_file {} holds no PEM certificate", file.display());
        }
        for cert in certs {
            roots.add(cert).with_context(|| format!("ca_file {}: unusable certificate", file.display()))?;
        }
    }
    Ok(roots)
}

/// A client configuration trusting [`roots`].
pub(crate) fn client_config(ca_file: Option<&Path>) -> anyhow::Result<rustls::ClientConfig> {
    Ok(rustls::ClientConfig::builder().with_root_certificates(roots(ca_file)?).with_no_client_auth())
}
