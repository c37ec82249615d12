//! The demo's development token issuer: a fresh ES256 (P-256) signing key per start, its public
//! half as a JWKS file that the proxy loads through `jwks_file` like any production issuer, and
//! a ready-made bearer token, so the demo runs with authentication on and nothing to set up.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::KeyPair;
use serde::Serialize;

use super::pki::write_file;

/// File name of the private signing key (PKCS#8 PEM) in the data directory.
pub const SIGNING_KEY_FILE: &str = "token-signing.key";
/// File name of the JWKS document (public key only) in the data directory.
pub const JWKS_FILE: &str = "jwks.json";
/// File name of the minted token in the data directory.
pub const TOKEN_FILE: &str = "token.txt";
/// How long a minted demo token is valid.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);
/// `sub` of the demo token.
pub const SUBJECT: &str = "demo-user";
/// `scope` of the demo token; the demo route requires it.
pub const SCOPE: &str = "mcp:tools";
/// `org_id` of the demo token.
pub const ORG_ID: &str = "demo";

/// A development ES256 signing key with its key id.
pub struct SigningKey {
    pem: String,
    public_raw: Vec<u8>,
    kid: String,
}

/// A minted bearer token.
pub struct DemoToken {
    /// The compact JWT.
    pub token: String,
    /// Its `exp`.
    pub expires_at: SystemTime,
}

/// Paths of the token files in the data directory.
pub struct TokenFiles {
    /// Private signing key, mode 0600.
    pub signing_key: PathBuf,
    /// Public JWKS.
    pub jwks: PathBuf,
    /// The minted token, mode 0600.
    pub token: PathBuf,
}

impl TokenFiles {
    /// The paths used under `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        TokenFiles {
            signing_key: dir.join(SIGNING_KEY_FILE),
            jwks: dir.join(JWKS_FILE),
            token: dir.join(TOKEN_FILE),
        }
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    scope: &'a str,
    org_id: &'a str,
    iat: u64,
    nbf: u64,
    exp: u64,
}

impl SigningKey {
    /// Generates a fresh P-256 key.
    pub fn generate() -> anyhow::Result<Self> {
        let kp = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .context("generating the demo token signing key")?;
        let public_raw = kp.public_key_raw().to_vec();
        Ok(SigningKey {
            kid: kid_for(&public_raw),
            pem: kp.serialize_pem(),
            public_raw,
        })
    }

    /// The key id written into the JWKS and into every token header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The JWKS document holding the public key.
    pub fn jwks(&self) -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::json!({ "keys": [ec_jwk(&self.public_raw, &self.kid)?] }))
    }

    /// Writes the private key (0600) and the JWKS into `files`.
    pub fn write(&self, files: &TokenFiles) -> anyhow::Result<()> {
        write_file(&files.signing_key, self.pem.as_bytes(), 0o600)?;
        let mut jwks = serde_json::to_vec_pretty(&self.jwks()?).context("encoding the JWKS")?;
        jwks.push(b'\n');
        write_file(&files.jwks, &jwks, 0o644)
    }

    /// Signs a token for `issuer` and `audience` valid from `now` for [`TOKEN_LIFETIME`].
    pub fn mint(&self, issuer: &str, audience: &str, now: SystemTime) -> anyhow::Result<DemoToken> {
        let iat = now
            .duration_since(UNIX_EPOCH)
            .context("the system clock is before 1970")?
            .as_secs();
        let exp = iat + TOKEN_LIFETIME.as_secs();
        let claims = Claims {
            iss: issuer,
            sub: SUBJECT,
            aud: audience,
            scope: SCOPE,
            org_id: ORG_ID,
            iat,
            nbf: iat,
            exp,
        };
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let key = EncodingKey::from_ec_pem(self.pem.as_bytes())
            .context("loading the demo token signing key")?;
        let token =
            jsonwebtoken::encode(&header, &claims, &key).context("signing the demo token")?;
        Ok(DemoToken {
            token,
            expires_at: UNIX_EPOCH + Duration::from_secs(exp),
        })
    }
}

/// The public EC JWK (RFC 7517/7518) for an uncompressed P-256 point `0x04 || x || y`.
pub fn ec_jwk(public_raw: &[u8], kid: &str) -> anyhow::Result<serde_json::Value> {
    let point = match public_raw {
        [0x04, rest @ ..] if rest.len() == 64 => rest,
        _ => anyhow::bail!(
            "not an uncompressed P-256 public key ({} bytes)",
            public_raw.len()
        ),
    };
    let (x, y) = point.split_at(32);
    Ok(serde_json::json!({
        "kty": "EC",
        "crv": "P-256",
        "x": URL_SAFE_NO_PAD.encode(x),
        "y": URL_SAFE_NO_PAD.encode(y),
        "kid": kid,
        "use": "sig",
        "alg": "ES256",
    }))
}

/// Key id: the first 16 hex digits of SHA-256 over the public point, so the same key always
/// gets the same id and a new key (every demo start) a different one.
pub fn kid_for(public_raw: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, public_raw);
    digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(v: &serde_json::Value) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(v.as_str().unwrap()).unwrap()
    }

    #[test]
    fn jwk_has_both_coordinates_and_a_stable_kid() {
        let key = SigningKey::generate().unwrap();
        let jwks = key.jwks().unwrap();
        let jwk = &jwks["keys"][0];
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
        assert_eq!(jwk["kty"], "EC");
        assert_eq!(jwk["crv"], "P-256");
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["alg"], "ES256");
        let (x, y) = (b64(&jwk["x"]), b64(&jwk["y"]));
        assert_eq!((x.len(), y.len()), (32, 32));
        assert_eq!([&[4u8][..], &x, &y].concat(), key.public_raw);

        assert_eq!(jwk["kid"], key.kid());
        assert_eq!(key.kid().len(), 16);
        assert!(key.kid().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(kid_for(&key.public_raw), key.kid());
        assert_ne!(SigningKey::generate().unwrap().kid(), key.kid());
    }

    #[test]
    fn kid_is_the_sha256_prefix() {
        // SHA-256("abc") = ba7816bf8f01cfea…
        assert_eq!(kid_for(b"abc"), "ba7816bf8f01cfea");
    }

    #[test]
    fn other_point_encodings_are_refused() {
        assert!(ec_jwk(&[4; 65], "k").is_ok());
        assert!(ec_jwk(&[2; 33], "k").is_err());
        assert!(ec_jwk(&[4; 64], "k").is_err());
        assert!(ec_jwk(&[], "k").is_err());
    }

    #[test]
    fn minted_token_verifies_against_the_jwks() {
        let key = SigningKey::generate().unwrap();
        let now = SystemTime::now();
        let minted = key
            .mint(
                "https://localhost:8443/demo-idp",
                "https://localhost:8443/mcp",
                now,
            )
            .unwrap();
        let header = jsonwebtoken::decode_header(&minted.token).unwrap();
        assert_eq!(header.alg, Algorithm::ES256);
        assert_eq!(header.kid.as_deref(), Some(key.kid()));

        let jwk: jsonwebtoken::jwk::Jwk =
            serde_json::from_value(key.jwks().unwrap()["keys"][0].clone()).unwrap();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::ES256);
        validation.set_issuer(&["https://localhost:8443/demo-idp"]);
        validation.set_audience(&["https://localhost:8443/mcp"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(
            &minted.token,
            &jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap(),
            &validation,
        )
        .unwrap();
        let c = data.claims;
        assert_eq!(c["sub"], SUBJECT);
        assert_eq!(c["scope"], SCOPE);
        assert_eq!(c["org_id"], ORG_ID);
        assert_eq!(c["nbf"], c["iat"]);
        assert_eq!(
            c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(),
            TOKEN_LIFETIME.as_secs()
        );
        assert_eq!(
            minted.expires_at,
            UNIX_EPOCH + Duration::from_secs(c["exp"].as_u64().unwrap())
        );

        let other = SigningKey::generate().unwrap().jwks().unwrap();
        let other: jsonwebtoken::jwk::Jwk =
            serde_json::from_value(other["keys"][0].clone()).unwrap();
        assert!(
            jsonwebtoken::decode::<serde_json::Value>(
                &minted.token,
                &jsonwebtoken::DecodingKey::from_jwk(&other).unwrap(),
                &validation,
            )
            .is_err()
        );
    }
}
