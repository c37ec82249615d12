//! A token issuer for tests: an ES256 key written as a PEM public key the proxy trusts, and
//! claims with sensible defaults for the routes of `https://localhost:8443`.

use jsonwebtoken::{Algorithm, EncodingKey, Header};

/// The issuer the test proxy configs name.
pub const ISSUER: &str = "https://idp.test.example";

/// A signing key and its public half.
pub struct Idp {
    key: EncodingKey,
    /// PEM public key for `pem_keys`.
    pub public_pem: String,
    /// The `iss` of its tokens.
    pub issuer: String,
}

impl Idp {
    /// A fresh P-256 key issuing as [`ISSUER`].
    pub fn new() -> Idp {
        Idp::with_issuer(ISSUER)
    }

    /// A fresh P-256 key issuing as `issuer` (a second identity provider, e.g. a partner's).
    pub fn with_issuer(issuer: &str) -> Idp {
        let kp = rcgen::KeyPair::generate().expect("key");
        Idp {
            key: EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).expect("pem"),
            public_pem: kp.public_key_pem(),
            issuer: issuer.to_owned(),
        }
    }

    /// Writes the public key to `dir/idp.pem` and returns the `[[auth.issuers]]` table.
    pub fn issuer_toml(&self, dir: &std::path::Path) -> String {
        self.issuer_table(dir, "idp.pem", "")
    }

    /// Writes the public key to `dir/file` and returns the `[[auth.issuers]]` table with the
    /// `extra` lines (`organisations = …`) appended.
    pub fn issuer_table(&self, dir: &std::path::Path, file: &str, extra: &str) -> String {
        std::fs::write(dir.join(file), &self.public_pem).expect("write the issuer key");
        format!(
            "[[auth.issuers]]\nissuer = \"{}\"\nalgorithms = [\"ES256\"]\npem_keys = [\"{file}\"]\n{extra}\n",
            self.issuer
        )
    }

    /// An ES256 token for route `path` with `overrides` merged into the default claims.
    pub fn token(&self, path: &str, overrides: serde_json::Value) -> String {
        let now = super::clock::now();
        let claims = merged(
            serde_json::json!({
                "iss": self.issuer, "sub": "agent-7", "aud": format!("https://localhost:8443{path}"),
                "exp": now + 600, "iat": now, "scope": "mcp:tools", "client_id": "partner-a",
            }),
            overrides,
        );
        self.sign_es256(&claims)
    }

    /// An ES256 token carrying exactly `claims`.
    pub fn sign_es256(&self, claims: &serde_json::Value) -> String {
        self.sign(Header::new(Algorithm::ES256), claims)
    }

    /// A token carrying exactly `claims` under `header` (a chosen `kid`, `typ`, …), signed with
    /// this key.
    pub fn sign(&self, header: Header, claims: &serde_json::Value) -> String {
        jsonwebtoken::encode(&header, claims, &self.key).expect("sign")
    }
}

/// `base` with every key of `overrides` set to its value there.
pub fn merged(mut base: serde_json::Value, overrides: serde_json::Value) -> serde_json::Value {
    if let (Some(c), Some(o)) = (base.as_object_mut(), overrides.as_object()) {
        for (k, v) in o {
            c.insert(k.clone(), v.clone());
        }
    }
    base
}
