//! Real PKCS#11 tokens for the HSM tests: SoftHSM2 (Debian `softhsm2`, installed by
//! `scripts/test`, the README's test command).
//!
//! SoftHSM2 reads its configuration from `$SOFTHSM2_CONF`, which `.cargo/config.toml` points
//! at `target/softhsm2/softhsm2.conf`; [`TestToken::new`] writes that file (tokens under
//! `target/softhsm2/tokens`) and initialises a token of its own, which `softhsm2-util`
//! deletes again on drop. Like the other oracles it fails loudly when the tool is missing: a
//! PKCS#11 test that skips itself proves nothing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// The SoftHSM2 PKCS#11 module: `$SOFTHSM2_MODULE`, or where Debian installs it.
pub fn module() -> PathBuf {
    if let Some(path) = std::env::var_os("SOFTHSM2_MODULE") {
        return PathBuf::from(path);
    }
    let candidates = [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/local/lib/softhsm/libsofthsm2.so",
    ];
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "no SoftHSM2 module: `apt-get install softhsm2` (scripts/test installs it) or set $SOFTHSM2_MODULE"
            )
        })
}

/// Writes SoftHSM2's configuration, once per process, and returns its path.
fn config() -> &'static Path {
    static CONF: OnceLock<PathBuf> = OnceLock::new();
    CONF.get_or_init(|| {
        let conf = PathBuf::from(std::env::var_os("SOFTHSM2_CONF").expect(
            "$SOFTHSM2_CONF is set by .cargo/config.toml; run the tests with cargo from the workspace",
        ));
        let dir = conf.parent().expect("the config has a directory");
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens).unwrap();
        let text = format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
            tokens.display()
        );
        // Written whole and renamed, so another test process never reads half of it.
        let tmp = dir.join(format!("softhsm2.conf.{}", std::process::id()));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &conf).unwrap();
        conf
    })
}

/// This process's handle on the SoftHSM2 module, initialised once and never dropped: a
/// module unloaded while initialised crashes the process at exit.
pub fn pkcs11() -> &'static cryptoki::context::Pkcs11 {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    static PKCS11: OnceLock<Pkcs11> = OnceLock::new();
    PKCS11.get_or_init(|| {
        config();
        let pkcs11 = Pkcs11::new(module()).unwrap();
        // Already initialised by the code under test: fine.
        let _ = pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
        pkcs11
    })
}

/// The first slot whose token `matches` (a slot whose token cannot be read is skipped).
fn slot_where(
    matches: impl Fn(&cryptoki::slot::TokenInfo) -> bool,
) -> Option<cryptoki::slot::Slot> {
    let pkcs11 = pkcs11();
    pkcs11
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| pkcs11.get_token_info(*s).is_ok_and(|i| matches(&i)))
}

/// A SoftHSM2 token of one test's own, with a user PIN in a file; deleted on drop.
#[derive(Debug)]
pub struct TestToken {
    pub module: PathBuf,
    pub label: String,
    pub pin: String,
    pin_file: tempfile::NamedTempFile,
}

impl TestToken {
    /// A new, empty token labelled `<prefix>-<random>` (at most 32 bytes), made in this
    /// process through the module itself: SoftHSM2 reads its tokens when it is initialised,
    /// so a token `softhsm2-util` made afterwards would stay invisible to this process
    /// (signers started later, as processes of their own, see it either way).
    pub fn new(prefix: &str) -> Self {
        use cryptoki::session::UserType;
        use cryptoki::types::AuthPin;
        // One token is made at a time: each takes the one free slot.
        static MAKING: Mutex<()> = Mutex::new(());
        let module = module();
        let suffix = &crate::random_uid()[..8];
        let label = format!("{}-{suffix}", &prefix[..prefix.len().min(23)]);
        let pin = "1234-test-pin".to_owned();
        let so_pin = AuthPin::from("5678-test-so-pin");
        {
            let _making = MAKING.lock().unwrap_or_else(|e| e.into_inner());
            let pkcs11 = pkcs11();
            let free = slot_where(|i| !i.token_initialized())
                .expect("SoftHSM2 always offers one free slot");
            pkcs11.init_token(free, &so_pin, &label).unwrap();
            let session = pkcs11.open_rw_session(free).unwrap();
            session.login(UserType::So, Some(&so_pin)).unwrap();
            session.init_pin(&AuthPin::from(pin.as_str())).unwrap();
            session.logout().unwrap();
        }
        let mut pin_file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut pin_file, format!("{pin}\n").as_bytes()).unwrap();
        TestToken {
            module,
            label,
            pin,
            pin_file,
        }
    }

    /// The slot that holds this token.
    pub fn slot(&self) -> cryptoki::slot::Slot {
        slot_where(|i| i.label().trim_end() == self.label).expect("the token is there")
    }

    /// The file holding the user PIN, for `--ca-pkcs11-pin-file`.
    pub fn pin_file(&self) -> &Path {
        self.pin_file.path()
    }
}

impl Drop for TestToken {
    fn drop(&mut self) {
        // Best effort: a token left behind is only a few files under target/softhsm2.
        let _ = Command::new("softhsm2-util")
            .args(["--delete-token", "--token", &self.label])
            .env("SOFTHSM2_CONF", config())
            .output();
    }
}
