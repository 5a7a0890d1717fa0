//! The depot tooling a user ships their own content with, run locally:
//! `dse depot keygen` makes an ed25519 key pair, and `dse depot add`
//! copies payloads into a depot directory, writes their manifest with each
//! payload's SHA-256, and signs it. What it writes is checked the way
//! `dse serve` checks an import before it says it is done.

use anyhow::{Context, Result, bail};
use dse_control::lifecycle::depot::{self, Acceptance, Manifest, Payload, TrustedKeys};
use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A signing key as `dse depot keygen` writes it: `<key id> <secret key,
/// 64 hex digits>`.
pub struct KeyFile {
    /// The name the signatures give the key by.
    pub id: String,
    /// The key.
    pub key: SigningKey,
}

impl KeyFile {
    /// Reads `path`.
    ///
    /// # Errors
    /// The file cannot be read, or is not one line of `<id> <hex>`.
    pub fn load(path: &Path) -> Result<KeyFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the key file {}", path.display()))?;
        let (id, hex_key) = text.trim().split_once(' ').with_context(|| {
            format!("{}: expected `<key id> <secret key, hex>`", path.display())
        })?;
        let bytes: [u8; 32] = hex::decode(hex_key.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .with_context(|| format!("{}: the secret key is not 64 hex digits", path.display()))?;
        Ok(KeyFile {
            id: id.to_string(),
            key: SigningKey::from_bytes(&bytes),
        })
    }

    /// The line `dse serve --trusted-keys` reads for this key.
    pub fn trusted_line(&self) -> String {
        format!(
            "{} {}",
            self.id,
            hex::encode(self.key.verifying_key().to_bytes())
        )
    }
}

/// Makes a key pair named `id`: the secret half into `out` (created, mode
/// 0600, never overwritten); returns the trusted-keys line of the public
/// half.
///
/// # Errors
/// A bad id, `out` existing or not writable, or no randomness.
pub fn keygen(id: &str, out: &Path) -> Result<String> {
    dse_datapath::name::check("key id", id)?;
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed)
        .map_err(|e| anyhow::anyhow!("reading randomness for the key: {e}"))?;
    let key = KeyFile {
        id: id.to_string(),
        key: SigningKey::from_bytes(&seed),
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .with_context(|| {
            format!(
                "creating the key file {} (an existing key is never overwritten)",
                out.display()
            )
        })?;
    writeln!(f, "{id} {}", hex::encode(key.key.to_bytes()))
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(key.trusted_line())
}

/// What `dse depot add` publishes.
pub struct Addition {
    /// The manifest without its payloads, which [`add`] fills in.
    pub manifest: Manifest,
    /// The files to ship.
    pub payloads: Vec<PathBuf>,
}

/// Copies the payloads into `depot` (created if missing), writes the
/// manifest `<name>-<version>.json` with their SHA-256 and its signature
/// by `key`, then verifies the result as an import would. Returns the
/// manifest's path.
///
/// # Errors
/// A payload that cannot be read or whose name another payload in the
/// depot already has with other content, a manifest of that name and
/// version already there, or a manifest the import checks would refuse.
pub fn add(depot: &Path, key: &KeyFile, addition: Addition) -> Result<PathBuf> {
    let Addition {
        mut manifest,
        payloads,
    } = addition;
    if payloads.is_empty() {
        bail!("give at least one --payload FILE");
    }
    let name = format!("{}-{}", manifest.name, manifest.version);
    dse_datapath::name::check("manifest name and version", &name)?;
    std::fs::create_dir_all(depot).with_context(|| format!("creating {}", depot.display()))?;
    let path = depot.join(format!("{name}.json"));
    if path.exists() {
        bail!(
            "{} exists already: a depot holds one manifest per name and version",
            path.display()
        );
    }
    for p in &payloads {
        let bytes =
            std::fs::read(p).with_context(|| format!("reading the payload {}", p.display()))?;
        let file = p
            .file_name()
            .and_then(|f| f.to_str())
            .with_context(|| format!("{}: a payload needs a file name", p.display()))?
            .to_string();
        dse_datapath::name::check("payload file name", &file)?;
        let there = depot.join(&file);
        match std::fs::read(&there) {
            Ok(existing) if existing != bytes => bail!(
                "{} exists with other content: rename the payload",
                there.display()
            ),
            Ok(_) => {}
            Err(_) => std::fs::write(&there, &bytes)
                .with_context(|| format!("copying the payload to {}", there.display()))?,
        }
        manifest.payloads.push(Payload {
            file,
            sha256: hex::encode(Sha256::digest(&bytes)),
        });
    }
    let text = serde_json::to_string_pretty(&manifest).expect("a manifest serialises");
    let sig = key.key.sign(text.as_bytes());
    std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
    let sig_path = depot.join(format!("{name}.json.sig"));
    std::fs::write(
        &sig_path,
        format!("{} {}\n", key.id, hex::encode(sig.to_bytes())),
    )
    .with_context(|| format!("writing {}", sig_path.display()))?;
    // Checked as `dse serve` will: the signature, each payload's SHA-256.
    let keys = TrustedKeys::one(&key.id, key.key.verifying_key());
    depot::verify(&path, &keys, Acceptance::CommunitySupported)?;
    Ok(path)
}
