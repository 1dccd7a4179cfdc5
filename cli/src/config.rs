//! Named contexts, as kubectl keeps them: each a control plane's URL and,
//! optionally, its admin key and the CA file its HTTPS certificate chains to,
//! in one TOML file (`$ARCCTL_CONFIG`, else
//! `$XDG_CONFIG_HOME/arc/arcctl.toml`, else `~/.config/arc/arcctl.toml`),
//! written with 0600 permissions because it holds keys.
//!
//! Which URL and key a command uses, first found wins: `--url` /
//! `--admin-key` (or `ARC_URL` / `ARC_ADMIN_KEY`), then the context named by
//! `--context` (or `ARC_CONTEXT`), then the file's current context, then
//! `http://127.0.0.1:7880` without a key. The CA file likewise: `--ca-file`
//! (`ARC_CA_FILE`), then the chosen context's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};

/// Where `arcctl` looks when nothing else is named.
pub(crate) const DEFAULT_URL: &str = "http://127.0.0.1:7880";

/// The file's contents.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// The context used when none is named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

/// One control plane.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Context {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_key: Option<String>,
    /// A CA (PEM) trusted for this control plane's HTTPS besides the
    /// system's roots: a private CA's, or `dev --tls-self-signed`'s certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

/// Where a command goes and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub url: String,
    pub key: Option<String>,
    pub ca_file: Option<PathBuf>,
}

/// The config file's path (see the module docs).
pub(crate) fn path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("ARCCTL_CONFIG").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|p| !p.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => match std::env::var_os("HOME").filter(|p| !p.is_empty()) {
            Some(home) => PathBuf::from(home).join(".config"),
            None => bail!("no config file: set ARCCTL_CONFIG, XDG_CONFIG_HOME or HOME"),
        },
    };
    Ok(base.join("arc").join("arcctl.toml"))
}

impl Config {
    /// Reads the file; a missing file is an empty config. Warns (once, on
    /// stderr) when a file holding keys is readable by others.
    pub(crate) fn load(path: &Path) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let config: Self =
            toml::from_str(&text).with_context(|| format!("{} is not a valid arcctl config", path.display()))?;
        if let Some(current) = &config.current
            && !config.contexts.contains_key(current)
        {
            bail!("{}: the current context {current:?} is not defined", path.display());
        }
        #[cfg(unix)]
        if config.contexts.values().any(|c| c.admin_key.is_some()) {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = std::fs::metadata(path)
                && meta.permissions().mode() & 0o077 != 0
            {
                eprintln!("warning: {} holds admin keys and is readable by others; chmod 600 it", path.display());
            }
        }
        Ok(config)
    }

    /// Writes the file atomically (a 0600 temporary file renamed over it),
    /// creating its directory (0700) when missing.
    pub(crate) fn save(&self, path: &Path) -> Result<()> {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).with_context(|| format!("creating {}", dir.display()))?;
        let text = toml::to_string_pretty(self).context("encoding the config")?;
        let name = path.file_name().map_or_else(|| "arcctl.toml".into(), |n| n.to_string_lossy().into_owned());
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&tmp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            anyhow::Error::new(e).context(format!("writing {}", path.display()))
        })
    }

    /// Adds or replaces a context.
    pub(crate) fn add(&mut self, name: &str, context: Context) -> Result<()> {
        check_name(name)?;
        check_url(&context.url)?;
        self.contexts.insert(name.to_owned(), context);
        Ok(())
    }

    /// Makes `name` the current context.
    pub(crate) fn use_context(&mut self, name: &str) -> Result<()> {
        if !self.contexts.contains_key(name) {
            bail!(crate::Failure::usage(format!("no context named {name:?} (arcctl context list)")));
        }
        self.current = Some(name.to_owned());
        Ok(())
    }

    /// Removes a context (and clears `current` if it was that one).
    pub(crate) fn remove(&mut self, name: &str) -> Result<()> {
        if self.contexts.remove(name).is_none() {
            bail!(crate::Failure::usage(format!("no context named {name:?} (arcctl context list)")));
        }
        if self.current.as_deref() == Some(name) {
            self.current = None;
        }
        Ok(())
    }

    /// The URL, key and CA file to use (see the module docs for the order).
    pub(crate) fn resolve(
        &self,
        url: Option<&str>,
        key: Option<&str>,
        ca_file: Option<&Path>,
        context: Option<&str>,
    ) -> Result<Target> {
        let chosen = match context.or(self.current.as_deref()) {
            None => None,
            Some(name) => match self.contexts.get(name) {
                Some(c) => Some(c),
                None => bail!(crate::Failure::usage(format!("no context named {name:?} (arcctl context list)"))),
            },
        };
        let url =
            url.map(str::to_owned).or_else(|| chosen.map(|c| c.url.clone())).unwrap_or_else(|| DEFAULT_URL.into());
        let key = key.map(str::to_owned).or_else(|| chosen.and_then(|c| c.admin_key.clone()));
        let ca_file = ca_file.map(Path::to_owned).or_else(|| chosen.and_then(|c| c.ca_file.clone()));
        Ok(Target { url, key, ca_file })
    }
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        bail!(crate::Failure::usage(format!("bad context name {name:?}: 1 to 64 of A-Z a-z 0-9 - _ .")));
    }
    Ok(())
}

fn check_url(url: &str) -> Result<()> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        Ok(_) => bail!(crate::Failure::usage(format!("bad URL {url:?}: http:// or https:// with a host"))),
        Err(e) => bail!(crate::Failure::usage(format!("bad URL {url:?}: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(url: &str, key: Option<&str>) -> Context {
        Context { url: url.into(), admin_key: key.map(Into::into), ca_file: None }
    }

    fn target(url: &str, key: Option<&str>, ca_file: Option<&str>) -> Target {
        Target { url: url.into(), key: key.map(Into::into), ca_file: ca_file.map(PathBuf::from) }
    }

    #[test]
    fn flags_win_then_the_named_context_then_the_current_one() {
        let mut c = Config::default();
        let prod = Context { ca_file: Some("/etc/arc/ca.pem".into()), ..ctx("https://arc.example.com", Some("pk")) };
        c.add("prod", prod).expect("add");
        c.add("lab", ctx("http://10.0.0.5:7880", None)).expect("add");
        assert_eq!(c.resolve(None, None, None, None).expect("resolve"), target(DEFAULT_URL, None, None));
        c.use_context("prod").expect("use");
        assert_eq!(
            c.resolve(None, None, None, None).expect("r"),
            target("https://arc.example.com", Some("pk"), Some("/etc/arc/ca.pem"))
        );
        assert_eq!(
            c.resolve(None, None, Some(Path::new("/tmp/other.pem")), None).expect("r"),
            target("https://arc.example.com", Some("pk"), Some("/tmp/other.pem"))
        );
        assert_eq!(c.resolve(None, None, None, Some("lab")).expect("r"), target("http://10.0.0.5:7880", None, None));
        assert_eq!(
            c.resolve(Some("http://h:1"), Some("k"), None, Some("lab")).expect("r"),
            target("http://h:1", Some("k"), None)
        );
        assert!(c.resolve(None, None, None, Some("nope")).is_err());
        c.remove("prod").expect("remove");
        assert_eq!(c.current, None);
    }

    #[test]
    fn bad_names_and_urls_are_refused() {
        let mut c = Config::default();
        for name in ["", "a b", "x/y", &"n".repeat(65)] {
            assert!(c.add(name, ctx("http://h", None)).is_err(), "{name:?}");
        }
        for url in ["h:7880", "ftp://h", "http://", "not a url"] {
            assert!(c.add("a", ctx(url, None)).is_err(), "{url:?}");
        }
        assert!(c.use_context("missing").is_err());
    }

    #[test]
    fn the_file_round_trips_with_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub").join("arcctl.toml");
        let mut c = Config::default();
        c.add("dev", ctx("http://127.0.0.1:7880", Some("secret"))).expect("add");
        c.use_context("dev").expect("use");
        c.save(&path).expect("save");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let back = Config::load(&path).expect("load");
        assert_eq!(back.current.as_deref(), Some("dev"));
        assert_eq!(back.contexts["dev"].admin_key.as_deref(), Some("secret"));
        assert!(Config::load(&dir.path().join("missing.toml")).expect("empty").contexts.is_empty());
        std::fs::write(&path, "current = 3").expect("write");
        assert!(Config::load(&path).is_err());
        std::fs::write(&path, "current = \"gone\"").expect("write");
        assert!(Config::load(&path).is_err());
    }
}
