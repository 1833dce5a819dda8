//! The operator's policy: trust domain, identity template, lifetimes and accepted key types.
//!
//! [`PolicyConfig`] is what the operator writes (its field names are the CLI flags' names);
//! [`Policy::new`] validates all of it once, at start, and refuses a bad value with a
//! [`ConfigError`] that names the setting. Per request the policy only does arithmetic:
//! [`Policy::validity`] computes notBefore/notAfter/beginRefreshAt in whole seconds so that
//! they satisfy contract §4 exactly.

use std::time::{Duration, SystemTime};

use crate::key::KeyType;
use crate::request::{Denial, DenyReason};
use crate::spiffe::{SpiffeIdTemplate, TrustDomain};
use crate::time::unix_seconds;

/// Every certificate lasts at least this long (API server rule).
pub const MIN_LIFETIME_SECONDS: i64 = 3600;
/// The largest `maxExpirationSeconds` the API server admits (91 days).
pub const MAX_LIFETIME_SECONDS: i64 = 7_862_400;
/// `beginRefreshAt` must be at least this far from both ends of the validity window.
pub const REFRESH_MARGIN_SECONDS: i64 = 600;
/// The API server wants notBefore within ±5 minutes of its clock; backdating must stay well
/// inside that.
pub const MAX_BACKDATE_SECONDS: i64 = 180;

/// The policy as configured; every field has a CLI flag of the same name.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyConfig {
    /// The signer name (`<domain>/<path>`): its domain prefixes the user annotations a rule
    /// may allow.
    pub signer_name: String,
    pub trust_domain: String,
    pub spiffe_id_template: String,
    /// Lifetime of a certificate when the request allows more (`--default-lifetime`).
    pub default_lifetime: Duration,
    /// Where in the lifetime `beginRefreshAt` falls, in (0, 1).
    pub refresh_fraction: f64,
    /// How far notBefore is set before now, for clock skew.
    pub backdate: Duration,
    /// Key types we issue for; requests with others are denied `UnsupportedKeyType`.
    pub allowed_key_types: Vec<KeyType>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            signer_name: "example.com/spiffe".into(),
            trust_domain: "cluster.local".into(),
            spiffe_id_template: SpiffeIdTemplate::DEFAULT.into(),
            default_lifetime: Duration::from_secs(86_400),
            refresh_fraction: 0.5,
            backdate: Duration::from_secs(120),
            allowed_key_types: KeyType::ALL.to_vec(),
        }
    }
}

/// A configuration value that cannot work, with the setting it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--{setting}: {message}")]
pub struct ConfigError {
    /// The CLI flag's name, without dashes.
    pub setting: &'static str,
    pub message: String,
}

fn config_err(setting: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        setting,
        message: message.into(),
    }
}

/// A validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The signer name's domain: user annotations are `<domain>/<name>`.
    annotation_domain: String,
    trust_domain: TrustDomain,
    template: SpiffeIdTemplate,
    default_lifetime: i64,
    refresh_fraction: f64,
    backdate: i64,
    allowed_key_types: Vec<KeyType>,
}

/// The three times an issued status carries, as Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: i64,
    pub not_after: i64,
    pub begin_refresh_at: i64,
}

impl Validity {
    pub fn lifetime(&self) -> i64 {
        self.not_after.saturating_sub(self.not_before)
    }
}

impl Policy {
    pub fn new(config: &PolicyConfig) -> Result<Policy, ConfigError> {
        let annotation_domain = match config.signer_name.split_once('/') {
            Some((domain, _)) if !domain.is_empty() => domain.to_string(),
            _ => {
                return Err(config_err(
                    "signer-name",
                    format!("{:?} is not <domain>/<path>", config.signer_name),
                ));
            }
        };
        let trust_domain = TrustDomain::new(&config.trust_domain)
            .map_err(|e| config_err("trust-domain", e.to_string()))?;
        let template = SpiffeIdTemplate::new(&config.spiffe_id_template, &trust_domain)
            .map_err(|e| config_err("spiffe-id-template", e.to_string()))?;
        let default_lifetime = i64::try_from(config.default_lifetime.as_secs()).unwrap_or(i64::MAX);
        if !(MIN_LIFETIME_SECONDS..=MAX_LIFETIME_SECONDS).contains(&default_lifetime) {
            return Err(config_err(
                "default-lifetime",
                format!(
                    "{default_lifetime}s is outside the {MIN_LIFETIME_SECONDS}s..={MAX_LIFETIME_SECONDS}s the API allows"
                ),
            ));
        }
        if !(config.refresh_fraction > 0.0 && config.refresh_fraction < 1.0) {
            return Err(config_err(
                "refresh-fraction",
                format!(
                    "{} is not strictly between 0 and 1",
                    config.refresh_fraction
                ),
            ));
        }
        let backdate = i64::try_from(config.backdate.as_secs()).unwrap_or(i64::MAX);
        if backdate > MAX_BACKDATE_SECONDS {
            return Err(config_err(
                "backdate",
                format!(
                    "{backdate}s is more than {MAX_BACKDATE_SECONDS}s; the API server wants notBefore within 5 minutes of now"
                ),
            ));
        }
        let mut allowed_key_types = config.allowed_key_types.clone();
        allowed_key_types.sort();
        allowed_key_types.dedup();
        if allowed_key_types.is_empty() {
            return Err(config_err(
                "allowed-key-types",
                "at least one key type must be allowed",
            ));
        }
        Ok(Policy {
            annotation_domain,
            trust_domain,
            template,
            default_lifetime,
            refresh_fraction: config.refresh_fraction,
            backdate,
            allowed_key_types,
        })
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    pub fn template(&self) -> &SpiffeIdTemplate {
        &self.template
    }

    /// The longest any certificate issued under this policy can stay valid: a CA that is
    /// replaced must stay trusted this long after its last signature.
    pub fn max_leaf_lifetime(&self) -> Duration {
        Duration::from_secs(self.default_lifetime as u64)
    }

    pub fn allowed_key_types(&self) -> &[KeyType] {
        &self.allowed_key_types
    }

    /// The domain that prefixes the user annotations workloads may set (see
    /// [`crate::annotations`]).
    pub fn annotation_domain(&self) -> &str {
        &self.annotation_domain
    }

    /// The validity of a certificate issued `now` for a request allowing
    /// `max_expiration_seconds`: lifetime = min(default lifetime, max expiration), counted
    /// from the backdated notBefore; beginRefreshAt at the refresh fraction, clamped into
    /// [notBefore + 10 min, notAfter − 10 min]. All in whole seconds.
    pub fn validity(
        &self,
        max_expiration_seconds: i64,
        now: SystemTime,
    ) -> Result<Validity, Denial> {
        if max_expiration_seconds < MIN_LIFETIME_SECONDS {
            return Err(Denial::new(
                DenyReason::InvalidMaxExpirationSeconds,
                format!(
                    "maxExpirationSeconds is {max_expiration_seconds}; certificates must last at least {MIN_LIFETIME_SECONDS} seconds"
                ),
            ));
        }
        let lifetime = self.default_lifetime.min(max_expiration_seconds);
        let now = unix_seconds(now);
        let not_before = now.saturating_sub(self.backdate);
        Ok(self.window(not_before, not_before.saturating_add(lifetime)))
    }

    /// beginRefreshAt for the window [not_before, not_after] (lifetime ≥ 20 minutes).
    pub fn window(&self, not_before: i64, not_after: i64) -> Validity {
        let lifetime = not_after.saturating_sub(not_before);
        // Lifetimes fit in f64 exactly; truncation keeps whole seconds.
        let refresh = not_before.saturating_add((lifetime as f64 * self.refresh_fraction) as i64);
        let begin_refresh_at = refresh
            .max(not_before.saturating_add(REFRESH_MARGIN_SECONDS))
            .min(not_after.saturating_sub(REFRESH_MARGIN_SECONDS));
        Validity {
            not_before,
            not_after,
            begin_refresh_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::from_unix_seconds;

    fn policy(f: impl FnOnce(&mut PolicyConfig)) -> Result<Policy, ConfigError> {
        let mut c = PolicyConfig::default();
        f(&mut c);
        Policy::new(&c)
    }

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn lifetime_is_the_smaller_of_default_and_max_expiration() {
        let p = policy(|_| {}).unwrap();
        let now = from_unix_seconds(NOW);
        assert_eq!(p.validity(86_400 * 30, now).unwrap().lifetime(), 86_400);
        assert_eq!(p.validity(7200, now).unwrap().lifetime(), 7200);
        // contract §4: with maxExpirationSeconds 3600 the lifetime is exactly 3600.
        let v = p.validity(3600, now).unwrap();
        assert_eq!(v.lifetime(), 3600);
        assert_eq!(v.not_before, NOW - 120);
    }

    #[test]
    fn below_an_hour_is_denied() {
        let p = policy(|_| {}).unwrap();
        let d = p.validity(3599, SystemTime::now()).unwrap_err();
        assert_eq!(d.reason, DenyReason::InvalidMaxExpirationSeconds);
    }

    #[test]
    fn begin_refresh_at_is_clamped_into_the_window() {
        for fraction in [0.001, 0.5, 0.999] {
            let p = policy(|c| c.refresh_fraction = fraction).unwrap();
            for max in [3600, 3601, 86_400, MAX_LIFETIME_SECONDS] {
                let v = p.validity(max, from_unix_seconds(NOW)).unwrap();
                assert!(v.begin_refresh_at >= v.not_before + 600, "{fraction} {max}");
                assert!(v.begin_refresh_at <= v.not_after - 600, "{fraction} {max}");
            }
        }
        let v = policy(|_| {})
            .unwrap()
            .validity(86_400, from_unix_seconds(NOW))
            .unwrap();
        assert_eq!(v.begin_refresh_at, v.not_before + 43_200);
    }

    #[test]
    fn sub_second_now_is_truncated() {
        let p = policy(|_| {}).unwrap();
        let now = from_unix_seconds(NOW) + Duration::from_millis(999);
        assert_eq!(p.validity(3600, now).unwrap().not_before, NOW - 120);
    }

    #[test]
    fn bad_settings_name_their_flag() {
        type Edit = Box<dyn FnOnce(&mut PolicyConfig)>;
        let cases: [(&str, Edit); 7] = [
            ("trust-domain", Box::new(|c| c.trust_domain = "Bad".into())),
            (
                "spiffe-id-template",
                Box::new(|c| c.spiffe_id_template = "spiffe://x/y".into()),
            ),
            (
                "default-lifetime",
                Box::new(|c| c.default_lifetime = Duration::from_secs(60)),
            ),
            (
                "default-lifetime",
                Box::new(|c| c.default_lifetime = Duration::from_secs(8_000_000)),
            ),
            ("refresh-fraction", Box::new(|c| c.refresh_fraction = 1.0)),
            (
                "backdate",
                Box::new(|c| c.backdate = Duration::from_secs(600)),
            ),
            (
                "allowed-key-types",
                Box::new(|c| c.allowed_key_types.clear()),
            ),
        ];
        for (setting, f) in cases {
            let e = policy(f).unwrap_err();
            assert_eq!(e.setting, setting);
            assert!(e.to_string().starts_with(&format!("--{setting}: ")));
        }
        assert_eq!(
            policy(|c| c.refresh_fraction = f64::NAN)
                .unwrap_err()
                .setting,
            "refresh-fraction"
        );
    }
}
