//! The CA's settings: the CA Secret, what the CAs we make carry, their schedule, the
//! ClusterTrustBundle that publishes the roots, the PKCS#11 token that may hold the root
//! keys, and the upstream authority that may certify the intermediates instead
//! ([`super::upstream`]) — turned into the [`CaConfig`] the CA's life reads, with every step
//! of the schedule checked to have room.

use std::path::PathBuf;
use std::time::Duration;

use signer_core::{CaKeyType, CaProfile, ConfigError, TrustDomain, names};

use super::{err, object_name, parse_duration};
use crate::config::{CaConfig, CaLifecycle, Pin, TokenConfig};

/// The CA Secret, the CAs we make, and the trust bundle.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "CA")]
pub struct CaArgs {
    /// The CA Secret, `namespace/name` (type kubernetes.io/tls; created if missing).
    #[arg(
        long,
        env = "PODCERT_CA_SECRET",
        default_value = "podcert-signer/podcert-signer-ca"
    )]
    pub ca_secret: String,

    /// Key type of the roots and signing intermediates we generate: ECDSAP256, ECDSAP384 or ED25519.
    #[arg(long, env = "PODCERT_CA_KEY_TYPE", default_value = "ECDSAP256")]
    pub ca_key_type: CaKeyType,

    /// Validity of a root we generate.
    #[arg(long, env = "PODCERT_CA_VALIDITY", default_value = "365d", value_parser = parse_duration)]
    pub ca_validity: Duration,

    /// A root we generated is replaced automatically once it has less than this left.
    #[arg(long, env = "PODCERT_CA_ROTATE_BEFORE", default_value = "90d", value_parser = parse_duration)]
    pub ca_rotate_before: Duration,

    /// How long a new root is published in the preview trust bundle (for canary pods) before
    /// it joins the live one.
    #[arg(long, env = "PODCERT_CA_PREVIEW_DELAY", default_value = "24h", value_parser = parse_duration)]
    pub ca_preview_delay: Duration,

    /// How long a new root is published in the live trust bundle beside the old one before it signs.
    #[arg(long, env = "PODCERT_CA_PROPAGATION_DELAY", default_value = "24h", value_parser = parse_duration)]
    pub ca_propagation_delay: Duration,

    /// Validity of a signing intermediate (made in memory by the leader, renewed half-way).
    #[arg(long, env = "PODCERT_INTERMEDIATE_VALIDITY", default_value = "7d", value_parser = parse_duration)]
    pub intermediate_validity: Duration,

    /// Whether generated roots and intermediates carry a URI name constraint for the trust
    /// domain (rustls-webpki refuses chains with one, so it is off by default; a root of ours
    /// that does not match is rotated out at once).
    #[arg(long, env = "PODCERT_CA_NAME_CONSTRAINTS", default_value_t = false, action = clap::ArgAction::Set)]
    pub ca_name_constraints: bool,

    /// Suffix of the ClusterTrustBundle name (`<signer-name with / as :>:<suffix>`).
    #[arg(long, env = "PODCERT_TRUST_BUNDLE_SUFFIX", default_value = "ca")]
    pub trust_bundle_suffix: String,

    /// How often the published ClusterTrustBundle is checked for drift and repaired.
    #[arg(long, env = "PODCERT_TRUST_BUNDLE_RESYNC", default_value = "60s", value_parser = parse_duration)]
    pub trust_bundle_resync: Duration,

    #[command(flatten)]
    pub pkcs11: Pkcs11Args,

    #[command(flatten)]
    pub upstream: super::upstream::UpstreamArgs,
}

/// The PKCS#11 token that holds root keys, if any.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Root keys in a PKCS#11 token")]
pub struct Pkcs11Args {
    /// PKCS#11 module (shared library) of the token that holds root keys, e.g.
    /// /usr/lib/softhsm/libsofthsm2.so; unset: root keys are kept in the CA Secret.
    #[arg(long, env = "PODCERT_CA_PKCS11_MODULE")]
    pub ca_pkcs11_module: Option<PathBuf>,

    /// Label of the PKCS#11 token that holds root keys.
    #[arg(
        long,
        env = "PODCERT_CA_PKCS11_TOKEN_LABEL",
        default_value = "podcert-signer"
    )]
    pub ca_pkcs11_token_label: String,

    /// Label under which root keys are generated in, and found in, the token (with an
    /// upstream authority: the signing intermediates' keys, under `<label>.intermediate`).
    #[arg(
        long,
        env = "PODCERT_CA_PKCS11_KEY_LABEL",
        default_value = "podcert-signer-root"
    )]
    pub ca_pkcs11_key_label: String,

    /// File holding the token user's PIN (e.g. a mounted Secret); required with
    /// --ca-pkcs11-module.
    #[arg(long, env = "PODCERT_CA_PKCS11_PIN_FILE")]
    pub ca_pkcs11_pin_file: Option<PathBuf>,
}

impl CaArgs {
    /// The CA's part of the configuration, for `signer_name`'s trust bundle; the schedule is
    /// checked against the longest leaf and the clock's compression.
    pub fn config(
        &self,
        signer_name: &str,
        trust_domain: &TrustDomain,
        longest_leaf: Duration,
        time_scale: u32,
    ) -> Result<CaConfig, ConfigError> {
        let secret = object_name("ca-secret", &self.ca_secret)?;
        let lifecycle = self.lifecycle(longest_leaf, time_scale)?;
        let trust_bundle_name = format!(
            "{}:{}",
            signer_name.replace('/', ":"),
            self.trust_bundle_suffix
        );
        let preview_name = crate::ca::trust_bundle::preview_name(&trust_bundle_name);
        for name in [&trust_bundle_name, &preview_name] {
            let name_errors = names::cluster_trust_bundle_name_errors(signer_name, name);
            if name_errors.is_empty() {
                continue;
            }
            return Err(err(
                "trust-bundle-suffix",
                format!(
                    "{:?} would make the ClusterTrustBundle name {name:?}, which the API server refuses: {}",
                    self.trust_bundle_suffix,
                    name_errors.join("; ")
                ),
            ));
        }
        let pkcs11 = self.pkcs11.token()?;
        let upstream = self.upstream.config(&secret.namespace)?;
        Ok(CaConfig {
            secret,
            profile: CaProfile {
                key_type: self.ca_key_type,
                trust_domain: trust_domain.clone(),
                name_constraints: self.ca_name_constraints,
            },
            lifecycle,
            pkcs11,
            trust_bundle_name,
            trust_bundle_resync: self.trust_bundle_resync.max(Duration::from_secs(1)),
            upstream,
        })
    }

    /// The CA schedule, checked so that every step has room.
    fn lifecycle(
        &self,
        longest_leaf: Duration,
        time_scale: u32,
    ) -> Result<CaLifecycle, ConfigError> {
        let show = |d: Duration| humantime::format_duration(d).to_string();
        if self.intermediate_validity < longest_leaf * 2 {
            return Err(err(
                "intermediate-validity",
                format!(
                    "must be at least twice the longest leaf lifetime ({}), so a leaf never outlives its intermediate",
                    show(longest_leaf * 2)
                ),
            ));
        }
        let least_rotate_before =
            self.ca_preview_delay + self.ca_propagation_delay + self.intermediate_validity;
        if self.ca_rotate_before <= least_rotate_before {
            return Err(err(
                "ca-rotate-before",
                format!(
                    "must be more than --ca-preview-delay plus --ca-propagation-delay plus --intermediate-validity ({}), so the old root can sign until the new one is trusted",
                    show(least_rotate_before)
                ),
            ));
        }
        if self.ca_validity <= self.ca_rotate_before * 2 {
            return Err(err(
                "ca-validity",
                format!(
                    "must be more than twice --ca-rotate-before ({}), or a root would be replaced as soon as it is made",
                    show(self.ca_rotate_before * 2)
                ),
            ));
        }
        // A deposed leader's term stops signing within GRACE of real time after it lost the
        // Lease (it steps down before anyone may take over); on a compressed clock that is
        // `time_scale` times more certificate time.
        let deposed_grace = crate::leadership::term::GRACE * time_scale;
        Ok(CaLifecycle {
            root_validity: self.ca_validity,
            root_rotate_before: self.ca_rotate_before,
            preview_delay: self.ca_preview_delay,
            propagation_delay: self.ca_propagation_delay,
            intermediate_validity: self.intermediate_validity,
            retain_retired_roots: longest_leaf + deposed_grace,
        })
    }
}

impl Pkcs11Args {
    /// The token that holds root keys, if one is configured: the module exists and the PIN
    /// file is read (its content is never shown).
    fn token(&self) -> Result<Option<TokenConfig>, ConfigError> {
        let Some(module) = &self.ca_pkcs11_module else {
            if self.ca_pkcs11_pin_file.is_some() {
                return Err(err(
                    "ca-pkcs11-pin-file",
                    "is only used with --ca-pkcs11-module",
                ));
            }
            return Ok(None);
        };
        if !module.is_file() {
            return Err(err(
                "ca-pkcs11-module",
                format!(
                    "{} is not a file (the token's PKCS#11 shared library)",
                    module.display()
                ),
            ));
        }
        let Some(pin_file) = &self.ca_pkcs11_pin_file else {
            return Err(err(
                "ca-pkcs11-pin-file",
                "is required with --ca-pkcs11-module (a file holding the token user's PIN)",
            ));
        };
        let pin = std::fs::read_to_string(pin_file).map_err(|e| {
            err(
                "ca-pkcs11-pin-file",
                format!("cannot read {}: {}", pin_file.display(), e.kind()),
            )
        })?;
        let pin = pin.trim_end_matches(['\r', '\n']);
        if pin.is_empty() {
            return Err(err(
                "ca-pkcs11-pin-file",
                format!("{} is empty", pin_file.display()),
            ));
        }
        for (setting, label) in [
            ("ca-pkcs11-token-label", &self.ca_pkcs11_token_label),
            ("ca-pkcs11-key-label", &self.ca_pkcs11_key_label),
        ] {
            // A token label is at most 32 bytes (CK_TOKEN_INFO.label).
            if label.is_empty() || (setting == "ca-pkcs11-token-label" && label.len() > 32) {
                return Err(err(setting, "must be 1 to 32 bytes"));
            }
        }
        Ok(Some(TokenConfig {
            module: module.clone(),
            token_label: self.ca_pkcs11_token_label.clone(),
            key_label: self.ca_pkcs11_key_label.clone(),
            pin: Pin::new(pin.to_owned()),
        }))
    }
}
