//! Vault (or OpenBao, the same API) as the upstream authority: the PKI secrets engine's
//! `sign-intermediate` endpoint certifies each signing intermediate.
//!
//! [`Vault::certify`] logs in — with Kubernetes auth (`POST /v1/auth/<mount>/login`, the
//! signer's ServiceAccount token and a role) or with a token read from a file — then asks
//! `POST /v1/<pki mount>/root/sign-intermediate` (the mount's default issuer) for a CA
//! certificate of the requested lifetime, path length 0, with the request's own subject and
//! names, and revokes a token it logged in for. Every exchange is HTTPS with the server's
//! certificate verified (`--upstream-vault-ca-file`, or the system's roots), bounded in time
//! and size. The answer's chain is Vault's `ca_chain`; its roots are the self-signed
//! certificates in it (none when the mount's chain stops below its root: then the pinned
//! `--upstream-trust-anchors` are the roots). Credentials are read from their files at each
//! login, so a rotated ServiceAccount token or a token an agent renews is simply used, and
//! they never appear in an error: Vault's own error messages are quoted with any credential
//! they might contain removed. A 403 is a refusal (`Denied`), a 400 a request Vault will not
//! sign (`InvalidRequest`), any other answer a failure to retry.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, StatusCode};
use http_body_util::Full;
use hyper::body::Bytes;
use rustls::ClientConfig;
use serde_json::{Value, json};
use tracing::{info, warn};
use zeroize::Zeroizing;

use super::{Answer, Refusal, UpstreamError};
use crate::ca::trust_bundle::ders;
use crate::config::{VaultAuth, VaultConfig};
use crate::runtime::https_client::{self, HttpsError};

/// The longest one exchange with Vault may take.
const TIMEOUT: Duration = Duration::from_secs(30);
/// The most of an answer read: a chain of a few certificates is a few KiB.
const MAX_ANSWER_BYTES: usize = 1 << 20;
/// The most of Vault's error text quoted in a refusal.
const MAX_QUOTED: usize = 512;

/// A Vault PKI mount, reached over verified TLS.
#[derive(Clone)]
pub struct Vault {
    config: VaultConfig,
    tls: Arc<ClientConfig>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("address", &self.config.address.to_string())
            .field("pki_mount", &self.config.pki_mount)
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// The mount `config` names, its server checked with `tls`.
    pub fn new(config: VaultConfig, tls: Arc<ClientConfig>) -> Self {
        Vault { config, tls }
    }

    /// Where the requests go, for logs: `Vault https://host:8200 pki`.
    pub fn describe(&self) -> String {
        let address = self.config.address.to_string();
        format!(
            "Vault {} mount {}",
            address.trim_end_matches('/'),
            self.config.pki_mount
        )
    }

    /// Asks the mount to certify `csr_pem` as a CA for `duration`.
    pub async fn certify(
        &self,
        csr_pem: &str,
        duration: Duration,
    ) -> Result<Answer, UpstreamError> {
        let session = self.log_in().await?;
        let path = format!("{}/root/sign-intermediate", self.config.pki_mount);
        let body = json!({
            "csr": csr_pem,
            "ttl": format!("{}s", duration.as_secs()),
            "use_csr_values": true,
            "max_path_length": 0,
            "format": "pem",
        });
        let signed = self
            .call(Method::POST, &path, Some(&session), &body, &[])
            .await;
        if session.revoke
            && let Err(e) = self
                .call(
                    Method::POST,
                    "auth/token/revoke-self",
                    Some(&session),
                    &json!({}),
                    &[],
                )
                .await
        {
            warn!(vault = %self.describe(), error = %e, "could not revoke the token the signer logged in for; it expires with its TTL");
        }
        let data = signed?;
        let answer = answer_of(&data["data"], &path)?;
        info!(vault = %self.describe(), "Vault signed a new signing intermediate");
        Ok(answer)
    }

    /// A Vault token for this request: logged in for (and revoked after), or the file's.
    async fn log_in(&self) -> Result<Session, UpstreamError> {
        match &self.config.auth {
            VaultAuth::Token { file } => Ok(Session {
                token: read_secret(file, "--upstream-vault-token-file")?,
                revoke: false,
            }),
            VaultAuth::Kubernetes {
                mount,
                role,
                jwt_file,
            } => {
                let jwt = read_secret(jwt_file, "--upstream-vault-jwt-file")?;
                let body = json!({"role": role, "jwt": jwt.as_str()});
                let answer = self
                    .call(Method::POST, &format!("auth/{mount}/login"), None, &body, &[&jwt])
                    .await
                    .map_err(|e| match e {
                        UpstreamError::Refused(mut r) => {
                            r.message = format!("logging in to Vault (Kubernetes auth, role {role}) was refused: {}", r.message);
                            UpstreamError::Refused(r)
                        }
                        other => other,
                    })?;
                let token = answer["auth"]["client_token"]
                    .as_str()
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| {
                        UpstreamError::Unreachable(
                            "Vault's login answer holds no auth.client_token".into(),
                        )
                    })?;
                Ok(Session {
                    token: Zeroizing::new(token.to_owned()),
                    revoke: true,
                })
            }
        }
    }

    /// One request to `/v1/<path>`: the answer's JSON, or why there is none — an error
    /// that never holds the session's token or any of `credentials` the body carries.
    async fn call(
        &self,
        method: Method,
        path: &str,
        session: Option<&Session>,
        body: &Value,
        credentials: &[&str],
    ) -> Result<Value, UpstreamError> {
        let url = self.url(path)?;
        let mut request = Request::builder()
            .method(method)
            .uri(url.path_and_query().map_or("/", |p| p.as_str()))
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json");
        if let Some(ns) = &self.config.namespace {
            request = request.header("X-Vault-Namespace", ns);
        }
        if let Some(s) = session {
            let mut value = http::HeaderValue::from_str(&s.token).map_err(|_| {
                UpstreamError::Unreachable(
                    "the Vault token is not a valid header value (check the token file)".into(),
                )
            })?;
            value.set_sensitive(true);
            request = request.header("X-Vault-Token", value);
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| UpstreamError::Unreachable(format!("building the request: {e}")))?;
        let (status, answer) =
            https_client::exchange(&url, self.tls.clone(), request, MAX_ANSWER_BYTES, TIMEOUT)
                .await
                .map_err(|e| unreachable(&self.describe(), &e))?;
        let mut secrets: Vec<&str> = session.map(|s| s.token.as_str()).into_iter().collect();
        secrets.extend_from_slice(credentials);
        let json: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(json);
        }
        let said = redact(&errors_of(&json, &answer), &secrets);
        let at = format!("{} /v1/{path} answered {status}", self.describe());
        Err(match status {
            StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => {
                UpstreamError::Refused(Box::new(Refusal::new("Denied", format!("{at}: {said}"))))
            }
            StatusCode::BAD_REQUEST => UpstreamError::Refused(Box::new(Refusal::new(
                "InvalidRequest",
                format!("{at}: {said}"),
            ))),
            _ => UpstreamError::Unreachable(format!("{at}: {said}")),
        })
    }

    fn url(&self, path: &str) -> Result<http::Uri, UpstreamError> {
        let base = self.config.address.to_string();
        format!("{}/v1/{path}", base.trim_end_matches('/'))
            .parse()
            .map_err(|e| UpstreamError::Unreachable(format!("the Vault URL for {path}: {e}")))
    }
}

/// A Vault token, and whether it was logged in for (and so is revoked after use).
struct Session {
    token: Zeroizing<String>,
    revoke: bool,
}

fn unreachable(vault: &str, e: &HttpsError) -> UpstreamError {
    UpstreamError::Unreachable(format!("{vault}: {e}"))
}

/// A credential file's content, trimmed; the error names the flag, never the content.
fn read_secret(path: &PathBuf, flag: &str) -> Result<Zeroizing<String>, UpstreamError> {
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
        UpstreamError::Unreachable(format!(
            "{flag}: cannot read {}: {}",
            path.display(),
            e.kind()
        ))
    })?);
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(UpstreamError::Unreachable(format!(
            "{flag}: {} is empty",
            path.display()
        )));
    }
    Ok(Zeroizing::new(trimmed.to_owned()))
}

/// What Vault said went wrong: its `errors` array joined, else the body's start.
fn errors_of(json: &Value, raw: &[u8]) -> String {
    let said = match json["errors"].as_array() {
        Some(errors) if !errors.is_empty() => errors
            .iter()
            .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_owned))
            .map(|e| e.trim().replace(['\n', '\t'], " "))
            .collect::<Vec<_>>()
            .join("; "),
        _ => String::from_utf8_lossy(raw).trim().to_owned(),
    };
    let mut quoted: String = said.chars().take(MAX_QUOTED).collect();
    if quoted.len() < said.len() {
        quoted.push('…');
    }
    if quoted.is_empty() {
        "(no error text)".into()
    } else {
        quoted
    }
}

/// `text` with every occurrence of a credential in `secrets` replaced.
fn redact(text: &str, secrets: &[&str]) -> String {
    secrets
        .iter()
        .filter(|s| s.len() >= 8)
        .fold(text.to_owned(), |t, s| t.replace(s, "[redacted]"))
}

/// The chain and roots in a `sign-intermediate` answer's `data`: our certificate followed by
/// the issuing CAs of `ca_chain` (Vault lists the new certificate in it too), and its
/// self-signed certificates as the roots — which stay out of the chain pods are given.
fn answer_of(data: &Value, path: &str) -> Result<Answer, UpstreamError> {
    let unusable = |m: &str| {
        UpstreamError::Refused(Box::new(Refusal::new(
            "Unusable",
            format!("Vault's answer to /v1/{path}: {m}"),
        )))
    };
    let certificate = data["certificate"]
        .as_str()
        .filter(|c| !c.trim().is_empty())
        .ok_or_else(|| unusable("it holds no certificate"))?;
    let ours = ders(certificate);
    if ours.len() != 1 {
        return Err(unusable("`certificate` is not one PEM certificate"));
    }
    let chain: Vec<Vec<u8>> = data["ca_chain"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect::<String>())
        .map(|pem| ders(&pem))
        .unwrap_or_default()
        .into_iter()
        .filter(|der| *der != ours[0])
        .collect();
    let pem = |ders: &mut dyn Iterator<Item = &Vec<u8>>| -> String {
        ders.map(|der| signer_core::x509::certificate_pem(der))
            .collect()
    };
    let (roots, issuers): (Vec<_>, Vec<_>) = chain
        .iter()
        .partition(|der| signer_core::x509::is_self_signed(der));
    let roots_pem = pem(&mut roots.into_iter());
    let chain_pem = pem(&mut ours.iter().chain(issuers));
    Ok(Answer {
        chain_pem,
        roots_pem,
        from: format!("Vault /v1/{path}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vaults_errors_are_quoted_bounded_and_without_credentials() {
        let json = json!({"errors": ["permission denied", "token s.Abcdefgh1234 is\nbad"]});
        let said = redact(&errors_of(&json, b""), &["s.Abcdefgh1234"]);
        assert_eq!(said, "permission denied; token [redacted] is bad");
        let long = json!({"errors": ["x".repeat(2000)]});
        assert_eq!(errors_of(&long, b"").chars().count(), MAX_QUOTED + 1);
        assert_eq!(
            errors_of(&Value::Null, b"<html>bad gateway"),
            "<html>bad gateway"
        );
        assert_eq!(errors_of(&Value::Null, b""), "(no error text)");
    }

    #[test]
    fn the_answer_is_our_certificate_then_the_chain_and_its_roots_are_the_self_signed() {
        let (issued, _, root) = podcert_tests::fixtures::intermediate_ca_pem("Vault PKI");
        // Vault lists the new certificate in ca_chain too.
        let data = json!({"certificate": issued, "ca_chain": [issued, root]});
        let a = answer_of(&data, "pki/root/sign-intermediate").unwrap();
        assert_eq!(ders(&a.chain_pem), ders(&issued));
        assert_eq!(ders(&a.roots_pem), ders(&root));
        // A mount whose chain stops below its root names none; its issuing CAs are the chain.
        let (ours, _, _) = podcert_tests::fixtures::intermediate_ca_pem("Ours");
        let data = json!({"certificate": ours, "ca_chain": [ours, issued]});
        let a = answer_of(&data, "p").unwrap();
        assert!(a.roots_pem.is_empty());
        assert_eq!(ders(&a.chain_pem), [ders(&ours), ders(&issued)].concat());
        for bad in [
            json!({}),
            json!({"certificate": ""}),
            json!({"certificate": format!("{issued}{root}")}),
        ] {
            let Err(UpstreamError::Refused(r)) = answer_of(&bad, "p") else {
                panic!("{bad}")
            };
            assert_eq!(r.reason, "Unusable");
        }
    }

    /// A server that echoes the credential it was sent (a misbehaving proxy, say): neither the
    /// ServiceAccount token nor the Vault token reaches the refusal.
    #[tokio::test]
    async fn a_login_refusal_that_echoes_the_token_does_not_repeat_it() {
        use podcert_tests::https::{Answer as Served, StaticServer, WebCert};
        let jwt = "eyJhbGciOiJSUzI1NiJ9.secret-service-account-token";
        let cert = WebCert::generate("Vault TLS");
        let server = StaticServer::start(Served {
            status: 400,
            body: json!({"errors": [format!("invalid jwt {jwt}")]})
                .to_string()
                .into_bytes(),
            cert: cert.clone(),
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let jwt_file = dir.path().join("token");
        std::fs::write(&jwt_file, format!("{jwt}\n")).unwrap();
        use rustls::pki_types::pem::PemObject;
        let roots: Vec<_> =
            rustls::pki_types::CertificateDer::pem_slice_iter(cert.ca_pem.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap();
        let clock = crate::runtime::clock::Clock::default();
        let tls = https_client::web_pki(Some(&roots), "ca", clock).unwrap();
        let vault = Vault::new(
            VaultConfig {
                address: server.url().parse().unwrap(),
                ca: Some(roots),
                pki_mount: "pki".into(),
                namespace: None,
                auth: VaultAuth::Kubernetes {
                    mount: "kubernetes".into(),
                    role: "podcert-signer".into(),
                    jwt_file,
                },
            },
            Arc::new(tls),
        );
        let Err(UpstreamError::Refused(r)) = vault.certify("CSR", Duration::from_secs(3600)).await
        else {
            panic!("a refusal")
        };
        assert_eq!(r.reason, "InvalidRequest");
        assert!(
            r.message.contains("invalid jwt [redacted]"),
            "{}",
            r.message
        );
        assert!(
            !r.message.contains("secret-service-account-token"),
            "{}",
            r.message
        );
    }
}
