//! Where the vault is and what opens it, resolved once from flags, environment and the
//! user's data directory; and the plugin runtime, set up with the user's cache.
//!
//! Without `--vault` or `$TESSERA_VAULT` the vault is `<data dir>/tessera/vault`, opened
//! by the key file `<data dir>/tessera/vault.key` beside it. That pair is made on first
//! use so a first `tessera backup DIR` works with no setup at all; the key file is the
//! only way into that vault, so it is created readable by its owner alone.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result, anyhow, bail};
use tessera_runtime::{Runtime, RuntimeOptions};
use tessera_vault::format::DEFAULT_COMPRESSION_LEVEL;
use tessera_vault::{
    Backend, Credential, DryRunBackend, Encryption, Error as VaultError, FileKind, InitOptions,
    LocalBackend, OpenOptions, SystemClock, Vault,
};

use crate::cli::GlobalArgs;
use crate::output::Output;

/// The environment variable holding the vault's password.
pub const PASSWORD_ENV: &str = "TESSERA_PASSWORD";

/// Directory under the user's data and cache directories.
const APP_DIR: &str = "tessera";
/// The default vault, under `<data dir>/tessera`.
const DEFAULT_VAULT_DIR: &str = "vault";
/// The default vault's key file, under `<data dir>/tessera`.
const DEFAULT_KEY_FILE: &str = "vault.key";
/// Compiled plugins, under `<cache dir>/tessera`.
const COMPONENT_CACHE_DIR: &str = "components";
/// How a tessera key file's first line starts (see `Credential::from_key_file`); a file
/// starting so is never taken for a password, so a damaged key file is reported as such.
const KEY_FILE_PREFIX: &str = "tessera-key-file";

/// Everything a verb needs from the global flags and the user's environment.
#[derive(Debug)]
pub struct Context {
    /// The global flags.
    pub global: GlobalArgs,
    /// How to print.
    pub output: Output,
}

/// Where the vault is, and whether that is the default location.
#[derive(Debug, Clone)]
pub struct VaultLocation {
    /// The vault's directory.
    pub path: PathBuf,
    /// The key file of the default vault, when the location is the default one.
    pub default_key_file: Option<PathBuf>,
}

/// A vault created by [`Context::init_vault`].
#[derive(Debug)]
pub struct CreatedVault {
    /// The open vault.
    pub vault: Vault,
    /// Its directory.
    pub path: PathBuf,
    /// The key file generated for it, if one was.
    pub new_key_file: Option<PathBuf>,
}

/// How a vault is to be protected at creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// Encrypted, opened by the password or key file in effect.
    Encrypted,
    /// Not encrypted (`--unencrypted`).
    Unencrypted,
}

impl Context {
    /// A context for these global flags.
    pub fn new(global: GlobalArgs) -> Self {
        let output = Output::new(global.json);
        Context { global, output }
    }

    /// Where the vault is: `--vault`, else `$TESSERA_VAULT` (both through clap), else the
    /// default under the user's data directory.
    pub fn location(&self) -> Result<VaultLocation> {
        if let Some(path) = &self.global.vault {
            return Ok(VaultLocation {
                path: path.clone(),
                default_key_file: None,
            });
        }
        let app = dirs::data_dir()
            .ok_or_else(|| {
                anyhow!("cannot find the user's data directory: give --vault or set TESSERA_VAULT")
            })?
            .join(APP_DIR);
        Ok(VaultLocation {
            path: app.join(DEFAULT_VAULT_DIR),
            default_key_file: Some(app.join(DEFAULT_KEY_FILE)),
        })
    }

    /// The credential the user gave: `--password-file`, else `$TESSERA_PASSWORD`.
    fn given_credential(&self) -> Result<Option<Credential>> {
        if let Some(path) = &self.global.password_file {
            return credential_from_file(path).map(Some);
        }
        match std::env::var(PASSWORD_ENV) {
            Ok(password) if !password.is_empty() => Ok(Some(Credential::password(password))),
            Ok(_) => bail!("{PASSWORD_ENV} is set but empty"),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => bail!("{PASSWORD_ENV} is not valid UTF-8"),
        }
    }

    /// The credential to open the vault at `location` with: the one given, else the
    /// default vault's key file if it exists.
    fn credential(&self, location: &VaultLocation) -> Result<Option<Credential>> {
        if let Some(credential) = self.given_credential()? {
            return Ok(Some(credential));
        }
        match &location.default_key_file {
            Some(key_file) if key_file.exists() => credential_from_file(key_file).map(Some),
            _ => Ok(None),
        }
    }

    /// Opens the vault.
    pub fn open_vault(&self) -> Result<Vault> {
        let location = self.location()?;
        self.open_at(&location, false)
    }

    /// Opens the vault in effect for a dry run: it reads the vault, and whatever it
    /// writes goes nowhere.
    pub fn open_vault_dry_run(&self) -> Result<Vault> {
        let location = self.location()?;
        self.open_at(&location, true)
    }

    fn open_at(&self, location: &VaultLocation, dry_run: bool) -> Result<Vault> {
        let credential = self.credential(location)?;
        let has_credential = credential.is_some();
        let mut backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(&location.path));
        if dry_run {
            backend = Arc::new(DryRunBackend::new(backend));
        }
        Vault::open(backend, OpenOptions::new(credential)).map_err(|err| {
            let context = format!("cannot open the vault at {}", location.path.display());
            match &err {
                // The message names the location already.
                VaultError::NotAVault { .. } if location.default_key_file.is_some() => {
                    anyhow!(
                        "{err} (run `tessera vault init` or `tessera backup PATH` to create it)"
                    )
                }
                VaultError::NotAVault { .. } => anyhow!(err),
                VaultError::Invalid(_) if !has_credential => {
                    anyhow!("{err} (give --password-file FILE or set TESSERA_PASSWORD)")
                        .context(context)
                }
                _ => anyhow!(err).context(context),
            }
        })
    }

    /// Opens the vault, creating the default vault (and its key file) if this is its
    /// first use. A vault the user named explicitly is never created implicitly: a typo
    /// in `--vault` should fail, not scatter vaults around.
    pub fn open_or_create_vault(&self) -> Result<Vault> {
        let location = self.location()?;
        // A vault exists once its config does: init writes the config last, so an
        // interrupted init is simply done again.
        let is_new = location.default_key_file.is_some()
            && LocalBackend::new(&location.path)
                .read(FileKind::Config, "config")
                .is_err_and(|e| e.is_not_found());
        if !is_new {
            return self.open_at(&location, false);
        }
        let created =
            self.create_at(&location, Protection::Encrypted, DEFAULT_COMPRESSION_LEVEL)?;
        self.output
            .note(&format!("created the vault {}", created.path.display()));
        if let Some(key_file) = &created.new_key_file {
            // Said even off a terminal: losing this file loses the vault.
            eprintln!("{}", key_file_advice(key_file));
        }
        Ok(created.vault)
    }

    /// Creates a vault at the location in effect.
    pub fn init_vault(
        &self,
        protection: Protection,
        compression_level: i32,
    ) -> Result<CreatedVault> {
        let location = self.location()?;
        self.create_at(&location, protection, compression_level)
    }

    fn create_at(
        &self,
        location: &VaultLocation,
        protection: Protection,
        compression_level: i32,
    ) -> Result<CreatedVault> {
        let mut new_key_file = None;
        let encryption = match protection {
            Protection::Unencrypted => Encryption::None,
            Protection::Encrypted => {
                let credential = match (self.given_credential()?, &location.default_key_file) {
                    (Some(credential), _) => credential,
                    (None, Some(key_file)) => {
                        let (credential, created) = load_or_create_key_file(key_file)?;
                        if created {
                            new_key_file = Some(key_file.clone());
                        }
                        credential
                    }
                    (None, None) => bail!(
                        "a new vault needs a password: give --password-file FILE or set \
                         TESSERA_PASSWORD (or pass --unencrypted)"
                    ),
                };
                Encryption::Credential(credential)
            }
        };
        let backend = Arc::new(LocalBackend::new(&location.path));
        let mut options = InitOptions::new(encryption);
        options.compression_level = compression_level;
        let vault =
            Vault::init(backend, options, Arc::new(SystemClock)).map_err(|err| match err {
                // The message names the location already.
                VaultError::AlreadyExists(_) => anyhow!(err),
                _ => anyhow!(err).context(format!(
                    "cannot create a vault at {}",
                    location.path.display()
                )),
            })?;
        Ok(CreatedVault {
            vault,
            path: std::path::absolute(&location.path).unwrap_or_else(|_| location.path.clone()),
            new_key_file,
        })
    }

    /// The plugin runtime, caching compiled plugins under `<cache dir>/tessera/components`.
    pub fn runtime(&self) -> Result<Runtime> {
        let options = RuntimeOptions {
            cache_dir: dirs::cache_dir().map(|dir| dir.join(APP_DIR).join(COMPONENT_CACHE_DIR)),
            ..RuntimeOptions::default()
        };
        Runtime::new(options).context("cannot start the plugin runtime")
    }
}

/// What to tell the user about a key file just generated.
pub fn key_file_advice(key_file: &Path) -> String {
    format!(
        "created the key file {}: keep a copy somewhere safe, without it the vault cannot \
         be read",
        key_file.display()
    )
}

/// Reads a credential from a file: a tessera key file, or else a password on the first
/// line (without its line ending).
pub fn credential_from_file(path: &Path) -> Result<Credential> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("cannot read the password file {}", path.display()))?;
    let first_line = text.lines().next().unwrap_or("");
    if first_line.trim_start().starts_with(KEY_FILE_PREFIX) {
        return Credential::from_key_file(&text)
            .with_context(|| format!("cannot use the key file {}", path.display()));
    }
    if first_line.is_empty() {
        bail!("the password file {} is empty", path.display());
    }
    Ok(Credential::password(first_line))
}

/// Loads the key file at `path`, or generates it if there is none. Returns the
/// credential and whether the file was created.
fn load_or_create_key_file(path: &Path) -> Result<(Credential, bool)> {
    if path.exists() {
        return credential_from_file(path).map(|c| (c, false));
    }
    let (credential, text) = Credential::generate_key_file();
    write_secret_file(path, text.as_bytes())
        .with_context(|| format!("cannot create the key file {}", path.display()))?;
    Ok((credential, true))
}

/// Writes a new file readable only by its owner; fails if the file exists, so an
/// existing key is never overwritten.
pub fn write_secret_file(path: &Path, contents: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_file_gives_its_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        fs::write(&path, "correct horse \r\nsecond line\n").unwrap();
        let Credential::Password(password) = credential_from_file(&path).unwrap() else {
            panic!("expected a password");
        };
        assert_eq!(password.as_str(), "correct horse ");
    }

    #[test]
    fn a_key_file_is_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let (_, text) = Credential::generate_key_file();
        fs::write(&path, text).unwrap();
        assert!(matches!(
            credential_from_file(&path).unwrap(),
            Credential::KeyFile(_)
        ));
    }

    #[test]
    fn a_damaged_key_file_is_not_taken_for_a_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        fs::write(&path, "tessera-key-file v1\nnot hex\n").unwrap();
        let err = credential_from_file(&path).unwrap_err();
        assert!(format!("{err:#}").contains("not a tessera key file"));
    }

    #[test]
    fn an_empty_password_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        fs::write(&path, "\n").unwrap();
        assert!(credential_from_file(&path).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn secret_files_are_private_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("vault.key");
        write_secret_file(&path, b"one").unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(write_secret_file(&path, b"two").is_err());
        assert_eq!(fs::read(&path).unwrap(), b"one");
    }
}
