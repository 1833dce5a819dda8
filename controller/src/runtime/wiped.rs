//! Key material the controller reads from or writes to the Kubernetes API, wiped when dropped.
//!
//! A `Secret` that may hold a private key — the CA Secret (`tls.key`, `next.key`) and the
//! bundle endpoint's SVID Secret — is held as a [`WipedSecret`], which zeroes its data when
//! it is dropped: the copy kube's watcher hands us, the one we write, and the one the API
//! server echoes back. [`wipe`] does the same to a `Secret` in place. Out of our reach, and
//! said so in docs/security.md: the HTTP buffers kube reads a Secret's JSON into and writes
//! it from, which are freed, not wiped.

use std::fmt;
use std::ops::{Deref, DerefMut};

use k8s_openapi::api::core::v1::Secret;
use zeroize::Zeroize;

/// A `Secret` whose data is zeroed when it is dropped. Its `Debug` names the Secret and the
/// keys of its data, never their values.
#[derive(Default)]
pub struct WipedSecret(Secret);

impl WipedSecret {
    pub fn new(secret: Secret) -> Self {
        WipedSecret(secret)
    }
}

impl Deref for WipedSecret {
    type Target = Secret;
    fn deref(&self) -> &Secret {
        &self.0
    }
}

impl DerefMut for WipedSecret {
    fn deref_mut(&mut self) -> &mut Secret {
        &mut self.0
    }
}

impl Drop for WipedSecret {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

impl fmt::Debug for WipedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WipedSecret")
            .field("name", &self.0.metadata.name)
            .field(
                "data",
                &self.0.data.as_ref().map(|d| d.keys().collect::<Vec<_>>()),
            )
            .finish_non_exhaustive()
    }
}

/// Zeroes every value of `secret`'s `data` and `stringData` where it lies (each is left
/// empty), before anything frees them.
pub fn wipe(secret: &mut Secret) {
    if let Some(data) = secret.data.as_mut() {
        data.values_mut().for_each(|v| v.0.zeroize());
    }
    if let Some(data) = secret.string_data.as_mut() {
        data.values_mut().for_each(Zeroize::zeroize);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;

    use super::*;

    #[test]
    fn a_secrets_values_are_zeroed_in_place_and_its_debug_never_shows_them() {
        let key = b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIK\n".to_vec();
        let mut secret = Secret {
            data: Some(BTreeMap::from([("tls.key".into(), ByteString(key))])),
            string_data: Some(BTreeMap::from([("pin".into(), "1234".into())])),
            ..Default::default()
        };
        let shown = format!("{:?}", WipedSecret::new(secret.clone()));
        assert!(
            shown.contains("tls.key") && !shown.contains("PRIVATE"),
            "{shown}"
        );

        wipe(&mut secret);
        let data = secret.data.unwrap();
        assert!(data["tls.key"].0.is_empty(), "the key survived");
        assert!(
            secret.string_data.unwrap()["pin"].is_empty(),
            "the PIN survived"
        );
    }
}
