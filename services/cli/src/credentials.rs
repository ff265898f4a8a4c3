//! Where `capex login` keeps the exchange URL and token: `$CAPEX_CONFIG_DIR` or
//! `$XDG_CONFIG_HOME/capex` or `~/.config/capex`, file `credentials.json`, mode 0600.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub(crate) struct Credentials {
    pub(crate) exchange: String,
    pub(crate) token: String,
    pub(crate) email: Option<String>,
}

pub(crate) fn config_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("CAPEX_CONFIG_DIR") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME") {
        return Ok(PathBuf::from(dir).join("capex"));
    }
    let home = std::env::var_os("HOME").context("HOME is not set; set CAPEX_CONFIG_DIR")?;
    Ok(PathBuf::from(home).join(".config").join("capex"))
}

fn path() -> anyhow::Result<PathBuf> {
    Ok(config_dir()?.join("credentials.json"))
}

pub(crate) fn load() -> anyhow::Result<Option<Credentials>> {
    let path = path()?;
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| format!("reading {}", path.display()))?)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes the credentials readable by the owner only; the token is as good as a password.
pub(crate) fn save(credentials: &Credentials) -> anyhow::Result<PathBuf> {
    let path = path()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    file.write_all(&serde_json::to_vec_pretty(credentials)?)?;
    file.sync_all()?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}
