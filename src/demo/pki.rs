//! A throw-away development PKI (one CA, server certificates it signs) for the demo and tests.
//! Keys are generated fresh in memory every time; nothing here is ever meant to be committed.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A development certificate authority.
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub cert_pem: String,
}

/// A certificate and its private key, both PEM.
pub struct IssuedCert {
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Private key (PKCS#8), PEM.
    pub key_pem: String,
    /// Serial number, so a test can revoke it with [`DevCa::crl`].
    pub serial: u64,
}

/// A fresh positive serial number (the top bit clear keeps the DER integer positive).
fn new_serial() -> u64 {
    rand::random::<u64>() >> 1
}

impl DevCa {
    /// Creates a new CA named `common_name`.
    pub fn new(common_name: &str) -> Result<Self, rcgen::Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        Ok(DevCa {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Issues a server certificate for `names` (DNS names or IP addresses).
    pub fn issue_server(&self, names: &[&str]) -> Result<IssuedCert, rcgen::Error> {
        self.issue_server_with(names, |_| {})
    }

    /// Like [`issue_server`](Self::issue_server), valid only until `year`-`month`-`day`
    /// (tests use past dates for expired certificates).
    pub fn issue_server_until(
        &self,
        names: &[&str],
        (year, month, day): (i32, u8, u8),
    ) -> Result<IssuedCert, rcgen::Error> {
        self.issue_server_with(names, |p| {
            p.not_before = rcgen::date_time_ymd(2000, 1, 1);
            p.not_after = rcgen::date_time_ymd(year, month, day);
        })
    }

    fn issue_server_with(
        &self,
        names: &[&str],
        adjust: impl FnOnce(&mut CertificateParams),
    ) -> Result<IssuedCert, rcgen::Error> {
        let key = KeyPair::generate()?;
        let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone())?;
        if let Some(first) = names.first() {
            params
                .distinguished_name
                .push(DnType::CommonName, first.as_str());
        }
        let serial = new_serial();
        params.serial_number = Some(serial.into());
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        adjust(&mut params);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            serial,
        })
    }
}

impl DevCa {
    /// Issues a client certificate whose subject common name and URI SAN carry `identity`
    /// (e.g. a SPIFFE id); used for mTLS to upstreams and, later, client authentication.
    pub fn issue_client(
        &self,
        common_name: &str,
        uri_san: Option<&str>,
    ) -> Result<IssuedCert, rcgen::Error> {
        self.issue_client_with(&[(DnType::CommonName, common_name)], uri_san)
    }

    /// Issues a client certificate whose subject has the attributes `subject`, in order (for
    /// tests of subject matching).
    pub fn issue_client_subject(
        &self,
        subject: &[(DnType, &str)],
    ) -> Result<IssuedCert, rcgen::Error> {
        self.issue_client_with(subject, None)
    }

    fn issue_client_with(
        &self,
        subject: &[(DnType, &str)],
        uri_san: Option<&str>,
    ) -> Result<IssuedCert, rcgen::Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        for (kind, value) in subject {
            params.distinguished_name.push(kind.clone(), *value);
        }
        if let Some(uri) = uri_san {
            params
                .subject_alt_names
                .push(rcgen::SanType::URI(rcgen::string::Ia5String::try_from(
                    uri,
                )?));
        }
        let serial = new_serial();
        params.serial_number = Some(serial.into());
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            serial,
        })
    }
}

impl DevCa {
    /// A PEM CRL signed by this CA revoking `serials`, valid from 2020 until 1 January of
    /// `next_update_year` (a past year makes an expired CRL).
    pub fn crl(&self, serials: &[u64], next_update_year: i32) -> Result<String, rcgen::Error> {
        let params = rcgen::CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2020, 1, 1),
            next_update: rcgen::date_time_ymd(next_update_year, 1, 1),
            crl_number: rcgen::SerialNumber::from(new_serial()),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| rcgen::RevokedCertParams {
                    serial_number: (*s).into(),
                    revocation_time: rcgen::date_time_ymd(2020, 1, 2),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer)?.pem()
    }
}

/// Files written for the demo.
pub struct DemoFiles {
    /// CA certificate clients trust.
    pub ca: PathBuf,
    /// Server certificate.
    pub cert: PathBuf,
    /// Server key.
    pub key: PathBuf,
}

/// Generates a CA and a server certificate for `localhost`, the loopback addresses and
/// `extra_ip` (the demo's bind address when it is not loopback) into `dir`.
pub fn write_demo_pki(dir: &Path, extra_ip: Option<std::net::IpAddr>) -> anyhow::Result<DemoFiles> {
    use anyhow::Context as _;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca = DevCa::new("mcp-edge demo CA").context("generating demo CA")?;
    let extra = extra_ip.map(|ip| ip.to_string());
    let mut names = vec!["localhost", "127.0.0.1", "::1"];
    names.extend(extra.as_deref());
    let server = ca
        .issue_server(&names)
        .context("generating demo server certificate")?;
    let files = DemoFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    write_file(&files.ca, ca.cert_pem.as_bytes(), 0o644)?;
    write_file(&files.cert, server.cert_pem.as_bytes(), 0o644)?;
    write_file(&files.key, server.key_pem.as_bytes(), 0o600)?;
    Ok(files)
}

/// Writes `bytes` to `path` with permissions `mode`.
pub(crate) fn write_file(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    // `mode` only applies when the file is created; a key file left by an earlier run (or
    // created by hand) keeps its old permissions unless they are set again, and that happens
    // before the secret is written.
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting permissions of {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
