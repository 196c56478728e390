//! Cache of precompiled plugin code, so a restart or reload of an unchanged
//! plugin skips compilation.
//!
//! Loading precompiled code runs native code with the server's rights, so an
//! entry is used only when the cache directory and the entry file belong to
//! the server's user and nobody else can write them, and the entry's header
//! names the component's SHA-256, the engine's configuration and the SHA-256
//! of the code that follows. Anything else is ignored with a warning naming
//! the path and the reason, and the component is compiled again.

use std::fs::File;
use std::hash::Hasher;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// First bytes of every entry; a new layout gets a new magic.
const MAGIC: &[u8; 16] = b"switchboard-cw1\n";
/// Magic, then the component's, the engine's and the code's SHA-256.
const HEADER_LEN: usize = MAGIC.len() + 3 * 32;

type Sha256Digest = [u8; 32];

pub struct CodeCache {
    dir: Option<PathBuf>,
    /// SHA-256 of the engine's `precompile_compatibility_hash`.
    engine: Sha256Digest,
}

/// Why a cache directory or entry is not used.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("cannot use it: {0}")]
    Io(#[from] std::io::Error),
    #[error("it belongs to uid {owner}, not to this server's user (uid {user})")]
    NotOwned { owner: u32, user: u32 },
    #[error("group or others can write it (mode {mode:o}); make it `chmod go-w`")]
    Writable { mode: u32 },
    #[error("it is not a {expected}")]
    WrongKind { expected: &'static str },
    #[cfg(not(unix))]
    #[error("this platform cannot tell who may write it")]
    Unverifiable,
    #[error("it is shorter than an entry's header")]
    Truncated,
    #[error("it is not a switchboard code cache entry")]
    Foreign,
    #[error("its header names another component")]
    OtherComponent,
    #[error("it was compiled for another engine configuration")]
    OtherEngine,
    #[error("its code does not match the checksum in its header")]
    Corrupted,
    #[error("wasmtime cannot load it: {0:#}")]
    Unloadable(wasmtime::Error),
}

impl CodeCache {
    /// `dir: None` disables caching.
    pub fn new(engine: &Engine, dir: Option<PathBuf>) -> Self {
        let mut hasher = Sha256Hasher(Sha256::new());
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut hasher);
        Self {
            dir,
            engine: hasher.0.finalize().into(),
        }
    }

    /// The default directory: `$XDG_CACHE_HOME/switchboard` or `~/.cache/switchboard`.
    pub fn default_dir() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))?;
        Some(base.join("switchboard"))
    }

    /// Returns the compiled component, from the cache when a trusted entry
    /// matches. Cache problems only cost a compilation; they are logged, never
    /// fatal.
    pub fn load(
        &self,
        engine: &Engine,
        wasm: &[u8],
        wasm_hash: &Sha256Digest,
    ) -> wasmtime::Result<Component> {
        let Some(dir) = &self.dir else {
            return Component::new(engine, wasm);
        };
        if let Err(refusal) = trusted_dir(dir) {
            tracing::warn!(
                path = %dir.display(),
                "not using the code cache directory: {refusal}; compiling instead"
            );
            return Component::new(engine, wasm);
        }
        let path = dir.join(self.file_name(wasm_hash));
        match self.read_entry(engine, &path, wasm_hash) {
            Ok(Some(component)) => return Ok(component),
            Ok(None) => {}
            Err(refusal) => tracing::warn!(
                path = %path.display(),
                "ignoring cached code: {refusal}; compiling again"
            ),
        }
        let code = engine.precompile_component(wasm)?;
        if let Err(error) = self.write_entry(&path, wasm_hash, &code) {
            tracing::warn!(path = %path.display(), "cannot cache precompiled code: {error}");
        }
        // SAFETY: `code` was produced just above by this engine.
        #[allow(unsafe_code)]
        unsafe {
            Component::deserialize(engine, &code)
        }
    }

    /// One file per component and engine configuration, so versions of a
    /// plugin and engines of different builds keep their own entries.
    fn file_name(&self, wasm_hash: &Sha256Digest) -> String {
        format!("{}-{}.cwasm", hex(wasm_hash), &hex(&self.engine)[..16])
    }

    /// `Ok(None)`: there is no entry yet.
    fn read_entry(
        &self,
        engine: &Engine,
        path: &Path,
        wasm_hash: &Sha256Digest,
    ) -> Result<Option<Component>, Refusal> {
        let mut file = match File::open(path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        // Checked on the open file, so it cannot be swapped after the check.
        let metadata = file.metadata()?;
        if !metadata.is_file() {
            return Err(Refusal::WrongKind {
                expected: "regular file",
            });
        }
        only_ours(&metadata)?;
        let mut entry = Vec::new();
        file.read_to_end(&mut entry)?;
        let code = self.verified_code(&entry, wasm_hash)?;
        // SAFETY: only this server's user can have written the file, in a
        // directory only it can write to, and its header ties the code to
        // this component and this engine's configuration, with a checksum of
        // the code itself.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(engine, code) };
        component.map(Some).map_err(Refusal::Unloadable)
    }

    /// The code of an entry whose header matches `wasm_hash`, this engine and the code.
    fn verified_code<'a>(
        &self,
        entry: &'a [u8],
        wasm_hash: &Sha256Digest,
    ) -> Result<&'a [u8], Refusal> {
        if entry.len() < HEADER_LEN {
            return Err(Refusal::Truncated);
        }
        let (header, code) = entry.split_at(HEADER_LEN);
        let (magic, hashes) = header.split_at(MAGIC.len());
        if magic != MAGIC {
            return Err(Refusal::Foreign);
        }
        let (component, hashes) = hashes.split_at(32);
        let (engine, code_hash) = hashes.split_at(32);
        if component != wasm_hash {
            return Err(Refusal::OtherComponent);
        }
        if engine != self.engine {
            return Err(Refusal::OtherEngine);
        }
        if Sha256::digest(code).as_slice() != code_hash {
            return Err(Refusal::Corrupted);
        }
        Ok(code)
    }

    /// Writes a new file and renames it over `path`, so a reader never sees
    /// half an entry; the file is readable and writable by its owner only.
    fn write_entry(
        &self,
        path: &Path,
        wasm_hash: &Sha256Digest,
        code: &[u8],
    ) -> std::io::Result<()> {
        let temporary = path.with_extension(format!("tmp{}", std::process::id()));
        let mut file = owner_only_file(&temporary)?;
        let written = [
            MAGIC.as_slice(),
            wasm_hash,
            &self.engine,
            &Sha256::digest(code),
            code,
        ]
        .iter()
        .try_for_each(|part| file.write_all(part));
        if let Err(error) = written.and_then(|()| std::fs::rename(&temporary, path)) {
            let _ = std::fs::remove_file(&temporary);
            return Err(error);
        }
        Ok(())
    }
}

/// Checks that `dir` (created `0700` when missing) is a directory of this
/// server's user that nobody else can write to.
fn trusted_dir(dir: &Path) -> Result<(), Refusal> {
    create_owner_only_dir(dir)?;
    let metadata = std::fs::metadata(dir)?;
    if !metadata.is_dir() {
        return Err(Refusal::WrongKind {
            expected: "directory",
        });
    }
    only_ours(&metadata)
}

#[cfg(unix)]
fn only_ours(metadata: &std::fs::Metadata) -> Result<(), Refusal> {
    use std::os::unix::fs::MetadataExt;
    let user = rustix::process::geteuid().as_raw();
    if metadata.uid() != user {
        return Err(Refusal::NotOwned {
            owner: metadata.uid(),
            user,
        });
    }
    let mode = metadata.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(Refusal::Writable { mode });
    }
    Ok(())
}

#[cfg(not(unix))]
fn only_ours(_: &std::fs::Metadata) -> Result<(), Refusal> {
    Err(Refusal::Unverifiable)
}

#[cfg(unix)]
fn create_owner_only_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_owner_only_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

#[cfg(unix)]
fn owner_only_file(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn owner_only_file(path: &Path) -> std::io::Result<File> {
    File::options().write(true).create_new(true).open(path)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Feeds what a `Hash` impl writes into SHA-256, for a digest that does not
/// change with the standard library's hasher.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// Required by `Hasher`; the cache reads the whole digest instead.
    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        let mut first = [0; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_le_bytes(first)
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::temp_dir::TempDir;

    /// The smallest component: the preamble of an empty one.
    const EMPTY: &[u8] = b"\0asm\x0d\x00\x01\x00";
    /// Another component: `EMPTY` with a custom section `x` holding `y`.
    const OTHER: &[u8] = b"\0asm\x0d\x00\x01\x00\x00\x03\x01xy";

    struct Fixture {
        _temp: TempDir,
        dir: PathBuf,
        engine: Engine,
        cache: CodeCache,
    }

    impl Fixture {
        fn new() -> Self {
            let temp = TempDir::new("cache-test");
            let dir = temp.path().join("cache");
            let engine = Engine::default();
            let cache = CodeCache::new(&engine, Some(dir.clone()));
            Self {
                _temp: temp,
                dir,
                engine,
                cache,
            }
        }

        fn entry(&self, wasm: &[u8]) -> PathBuf {
            self.dir.join(self.cache.file_name(&digest(wasm)))
        }

        /// Loads `wasm` and returns what was logged meanwhile.
        fn load(&self, wasm: &[u8]) -> String {
            let logs = Captured::default();
            let subscriber = tracing_subscriber::fmt()
                .with_writer({
                    let logs = logs.clone();
                    move || logs.clone()
                })
                .with_ansi(false)
                .finish();
            tracing::subscriber::with_default(subscriber, || {
                self.cache
                    .load(&self.engine, wasm, &digest(wasm))
                    .expect("the component loads")
            });
            let bytes = logs.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
            String::from_utf8_lossy(&bytes).into_owned()
        }

        fn entry_is_valid(&self, wasm: &[u8]) -> bool {
            let entry = std::fs::read(self.entry(wasm)).expect("the entry exists");
            self.cache.verified_code(&entry, &digest(wasm)).is_ok()
        }
    }

    fn digest(wasm: &[u8]) -> Sha256Digest {
        Sha256::digest(wasm).into()
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path)
            .expect("exists")
            .permissions()
            .mode()
            & 0o777
    }

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn creates_a_private_directory_and_reuses_its_entries() {
        let fixture = Fixture::new();
        assert_eq!(fixture.load(EMPTY), "");
        assert_eq!(mode(&fixture.dir), 0o700);
        assert_eq!(mode(&fixture.entry(EMPTY)), 0o600);
        assert!(fixture.entry_is_valid(EMPTY));
        let written = std::fs::metadata(fixture.entry(EMPTY)).and_then(|m| m.modified());
        assert_eq!(fixture.load(EMPTY), "", "a valid entry is used silently");
        let reread = std::fs::metadata(fixture.entry(EMPTY)).and_then(|m| m.modified());
        assert_eq!(written.ok(), reread.ok(), "a valid entry is not rewritten");
    }

    #[test]
    fn refuses_a_directory_others_can_write() {
        let fixture = Fixture::new();
        std::fs::create_dir(&fixture.dir).expect("mkdir");
        chmod(&fixture.dir, 0o777);
        let logs = fixture.load(EMPTY);
        assert!(
            logs.contains("WARN")
                && logs.contains(&fixture.dir.display().to_string())
                && logs.contains("group or others can write it (mode 777)"),
            "{logs}"
        );
        assert!(
            std::fs::read_dir(&fixture.dir)
                .expect("readable")
                .next()
                .is_none(),
            "nothing is written to an unsafe directory"
        );
    }

    #[test]
    fn recompiles_entries_it_cannot_trust() {
        let fixture = Fixture::new();
        fixture.load(EMPTY);
        let entry = fixture.entry(EMPTY);
        let good = std::fs::read(&entry).expect("entry");
        let flip_last = |mut bytes: Vec<u8>| {
            if let Some(last) = bytes.last_mut() {
                *last ^= 1;
            }
            bytes
        };
        let mut other_engine = good.clone();
        other_engine[MAGIC.len() + 32] ^= 1;
        let cases: [(&str, Vec<u8>); 5] = [
            (
                "its code does not match the checksum",
                flip_last(good.clone()),
            ),
            (
                "shorter than an entry's header",
                good[..HEADER_LEN - 1].to_vec(),
            ),
            (
                "its code does not match the checksum",
                good[..good.len() - 1].to_vec(),
            ),
            (
                "not a switchboard code cache entry",
                b"\x7fELF...".repeat(40),
            ),
            ("another engine configuration", other_engine),
        ];
        for (reason, tampered) in cases {
            std::fs::write(&entry, tampered).expect("tamper");
            let logs = fixture.load(EMPTY);
            assert!(
                logs.contains("WARN")
                    && logs.contains(&entry.display().to_string())
                    && logs.contains(reason)
                    && logs.contains("compiling again"),
                "{reason}: {logs}"
            );
            assert!(fixture.entry_is_valid(EMPTY), "{reason}: rewritten");
        }
        std::fs::copy(&entry, fixture.entry(OTHER)).expect("copy");
        let logs = fixture.load(OTHER);
        assert!(logs.contains("names another component"), "{logs}");
        assert!(fixture.entry_is_valid(OTHER));
    }

    #[test]
    fn refuses_an_entry_others_can_write() {
        let fixture = Fixture::new();
        fixture.load(EMPTY);
        let entry = fixture.entry(EMPTY);
        chmod(&entry, 0o666);
        let logs = fixture.load(EMPTY);
        assert!(
            logs.contains(&entry.display().to_string())
                && logs.contains("group or others can write it (mode 666)"),
            "{logs}"
        );
        assert_eq!(mode(&entry), 0o600, "replaced by a private entry");
    }
}
