//! The host key: an ed25519 key kept in one file readable by the agent's user only.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, bail};
use ed25519_dalek::SigningKey;

/// File name of the key inside the state directory.
pub const KEY_FILE: &str = "host.key";
/// Mode of the key file: owner read/write only.
pub const KEY_FILE_MODE: u32 = 0o600;

/// Creates a new key at `path` (mode 0600). Refuses if a file is already there, so a
/// registered host's identity is never replaced by accident.
pub fn create_key(path: &Path) -> anyhow::Result<SigningKey> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    // create_new fails if the file exists, atomically: no check-then-write race.
    let mut file = OpenOptions::new().write(true).create_new(true).mode(KEY_FILE_MODE).open(path).map_err(|err| {
        if err.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow::anyhow!("{} already exists: refusing to overwrite the host key", path.display())
        } else {
            anyhow::Error::new(err).context(format!("creating {}", path.display()))
        }
    })?;
    // The umask may have cleared bits but never adds any; set the mode explicitly anyway.
    file.set_permissions(std::fs::Permissions::from_mode(KEY_FILE_MODE))?;
    writeln!(file, "{}", hex::encode(key.to_bytes()))?;
    file.sync_all()?;
    Ok(key)
}

/// Loads the key; refuses a file that others can read, as ssh does.
pub fn load_key(path: &Path) -> anyhow::Result<SigningKey> {
    let metadata = std::fs::metadata(path)
        .with_context(|| format!("reading {} (run `capex-agent init` first)", path.display()))?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!("{} has mode {mode:o}: the host key must be readable by its owner only (chmod 600)", path.display());
    }
    let text = std::fs::read_to_string(path)?;
    let bytes: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .with_context(|| format!("{} is not a 32-byte hex key", path.display()))?;
    Ok(SigningKey::from_bytes(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_is_0600_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join(KEY_FILE);
        let key = create_key(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let err = create_key(&path).unwrap_err().to_string();
        assert!(err.contains("refusing to overwrite"), "{err}");
        assert_eq!(load_key(&path).unwrap().to_bytes(), key.to_bytes(), "the first key is kept");
    }

    #[test]
    fn readable_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        create_key(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load_key(&path).unwrap_err().to_string().contains("chmod 600"));
    }
}
