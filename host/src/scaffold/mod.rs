//! `switchboard plugin new`: a new plugin project, ready to build, test and
//! serve. For Rust it writes a crate depending on `switchboard-sdk`
//! (`src/lib.rs` handles `join` and `greet`: rooms, state and an emit), a
//! test, a `switchboard.toml` serving the component and a README with the
//! three commands. The templates are the files in `rust/`.
//!
//! The test is `tests/call.rs`, run by `cargo test`, because that is the
//! one test command a Rust author (and their CI) already runs. It builds the
//! component with the same `cargo build --target wasm32-wasip2 --release` as
//! for serving, so it never tests a stale build, and sends events through
//! `switchboard call`, which loads the component from the project's own
//! manifest as `serve` would: the test covers the manifest (events,
//! namespaces, `config`) as well as the code, and needs no server. So the
//! crate has no default target in `.cargo/config.toml`: the test runs natively.

mod name;

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub use name::NewPluginName;

/// The SDK of the checkout this binary was built from.
const CHECKOUT_SDK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins/sdk");

/// The SDK's package name, checked in `--sdk-path`.
const SDK_PACKAGE: &str = "switchboard-sdk";

/// A Rust plugin project: each file's path in the project and its template.
const RUST_PROJECT: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("rust/Cargo.toml.tmpl")),
    ("src/lib.rs", include_str!("rust/lib.rs.tmpl")),
    ("tests/call.rs", include_str!("rust/call.rs.tmpl")),
    (
        "switchboard.toml",
        include_str!("rust/switchboard.toml.tmpl"),
    ),
    ("README.md", include_str!("rust/README.md.tmpl")),
    (".gitignore", include_str!("rust/gitignore.tmpl")),
];

/// The language a plugin is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    Rust,
    JavaScript,
    Python,
}

impl FromStr for Language {
    type Err = String;

    fn from_str(language: &str) -> Result<Self, String> {
        match language {
            "rust" => Ok(Self::Rust),
            "js" => Ok(Self::JavaScript),
            "python" => Ok(Self::Python),
            other => Err(format!(
                "unknown language `{other}`: use rust, js or python"
            )),
        }
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Rust => "rust",
            Self::JavaScript => "js",
            Self::Python => "python",
        })
    }
}

/// What `switchboard plugin new` was asked for.
pub struct NewPlugin {
    pub name: String,
    pub language: Language,
    /// The project's directory; `./{name}` when `None`.
    pub dir: Option<PathBuf>,
    /// The SDK to depend on; the checkout's when `None`.
    pub sdk_path: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error("{0}")]
    InvalidName(String),
    #[error(
        "not yet supported: `--lang {0}`; only `rust` plugins can be scaffolded for now \
         (a {0} component built against the `plugin-core` world of wit/plugin.wit loads as it is)"
    )]
    UnsupportedLanguage(Language),
    #[error(
        "{} exists and is not an empty directory: pick another name or `--dir`, or remove it",
        .0.display()
    )]
    Occupied(PathBuf),
    #[error(
        "no Switchboard SDK (the package `{SDK_PACKAGE}`) at {}: pass `--sdk-path` with the \
         `plugins/sdk` directory of a Switchboard checkout",
        .0.display()
    )]
    SdkNotFound(PathBuf),
    #[error("the SDK's path {} is not UTF-8, which Cargo.toml needs", .0.display())]
    NonUtf8SdkPath(PathBuf),
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Writes the project `request` describes; returns its directory.
pub fn create(request: &NewPlugin) -> Result<PathBuf, ScaffoldError> {
    let name = NewPluginName::parse(&request.name).map_err(ScaffoldError::InvalidName)?;
    if request.language != Language::Rust {
        return Err(ScaffoldError::UnsupportedLanguage(request.language));
    }
    let dir = request
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(name.as_str()));
    let sdk = sdk_dependency(request.sdk_path.as_deref())?;
    ensure_vacant(&dir)?;
    for (file, template) in RUST_PROJECT {
        write_new(&dir.join(file), &render(template, &name, &sdk))?;
    }
    Ok(dir)
}

/// `template` with `{{name}}`, `{{crate_name}}` and `{{sdk}}` filled in.
fn render(template: &str, name: &NewPluginName, sdk: &str) -> String {
    template
        .replace("{{name}}", name.as_str())
        .replace("{{crate_name}}", &name.crate_name())
        .replace("{{sdk}}", sdk)
}

/// The `switchboard-sdk` dependency as Cargo.toml writes it: an absolute
/// path, so the project builds wherever it is (the SDK is not on crates.io yet).
fn sdk_dependency(sdk_path: Option<&Path>) -> Result<String, ScaffoldError> {
    let given = sdk_path.unwrap_or(Path::new(CHECKOUT_SDK));
    let not_found = || ScaffoldError::SdkNotFound(given.to_owned());
    let sdk = given.canonicalize().map_err(|_| not_found())?;
    let manifest = fs::read_to_string(sdk.join("Cargo.toml")).map_err(|_| not_found())?;
    let package: Option<String> = toml::from_str::<toml::Table>(&manifest)
        .ok()
        .and_then(|table| Some(table.get("package")?.get("name")?.as_str()?.to_owned()));
    if package.as_deref() != Some(SDK_PACKAGE) {
        return Err(not_found());
    }
    let path = sdk
        .to_str()
        .ok_or_else(|| ScaffoldError::NonUtf8SdkPath(sdk.clone()))?;
    Ok(format!("{{ path = {} }}", toml_basic_string(path)))
}

/// `text` as a TOML basic string: quoted, with `"`, `\` and control
/// characters escaped.
fn toml_basic_string(text: &str) -> String {
    let mut quoted = String::from('"');
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                quoted.push('\\');
                quoted.push(c);
            }
            c if c.is_control() => quoted.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// Refuses a `dir` that is a file or a directory with anything in it, so
/// nothing of the author's is overwritten.
fn ensure_vacant(dir: &Path) -> Result<(), ScaffoldError> {
    let occupied = match fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_some(),
        Err(error) => error.kind() != std::io::ErrorKind::NotFound,
    };
    if occupied {
        return Err(ScaffoldError::Occupied(dir.to_owned()));
    }
    Ok(())
}

/// Creates `path` (and its directories) with `contents`; never replaces a file.
fn write_new(path: &Path, contents: &str) -> Result<(), ScaffoldError> {
    let write = || {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)?
            .write_all(contents.as_bytes())
    };
    write().map_err(|source| ScaffoldError::Write {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::temp_dir::TempDir;

    fn request(name: &str, dir: PathBuf) -> NewPlugin {
        NewPlugin {
            name: name.to_owned(),
            language: Language::Rust,
            dir: Some(dir),
            sdk_path: None,
        }
    }

    #[test]
    fn every_placeholder_is_filled_in() {
        let name = NewPluginName::parse("my-poll").unwrap();
        for (file, template) in RUST_PROJECT {
            let text = render(template, &name, "{ path = \"/sdk\" }");
            assert!(!text.contains("{{"), "{file}: {text}");
        }
        let manifest = render(RUST_PROJECT[3].1, &name, "");
        assert!(manifest.contains("release/my_poll.wasm"), "{manifest}");
    }

    #[test]
    fn a_project_is_written_into_a_new_or_empty_directory_only() {
        let temp = TempDir::new("scaffold-test");
        let root = temp.path();
        let dir = create(&request("greet", root.join("greet"))).unwrap();
        let cargo = fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        assert!(cargo.contains("name = \"greet\""), "{cargo}");
        assert!(cargo.contains("switchboard-sdk = { path = \"/"), "{cargo}");

        let again = create(&request("greet", dir.clone())).expect_err("the directory is full");
        assert!(matches!(again, ScaffoldError::Occupied(_)), "{again}");
        fs::write(root.join("file"), "").unwrap();
        let file = create(&request("greet", root.join("file"))).expect_err("a file is in the way");
        assert!(matches!(file, ScaffoldError::Occupied(_)), "{file}");
        fs::create_dir(root.join("empty")).unwrap();
        create(&request("greet", root.join("empty"))).unwrap();
    }

    #[test]
    fn a_bad_name_language_or_sdk_is_refused_before_anything_is_written() {
        let temp = TempDir::new("scaffold-test");
        let dir = temp.path().join("project");
        let bad_name = create(&request("Greet", dir.clone())).expect_err("bad name");
        assert!(
            matches!(bad_name, ScaffoldError::InvalidName(_)),
            "{bad_name}"
        );
        let js = NewPlugin {
            language: Language::JavaScript,
            ..request("greet", dir.clone())
        };
        assert_eq!(
            create(&js)
                .map_err(|error| error.to_string())
                .expect_err("js")
                .split(';')
                .next(),
            Some("not yet supported: `--lang js`")
        );
        let no_sdk = NewPlugin {
            sdk_path: Some(temp.path().to_owned()),
            ..request("greet", dir.clone())
        };
        assert!(matches!(
            create(&no_sdk),
            Err(ScaffoldError::SdkNotFound(_))
        ));
        assert!(!dir.exists());
    }

    #[test]
    fn paths_are_quoted_as_toml_reads_them() {
        let text = "C:\\a \"b\"\n\u{7f}é";
        let quoted = toml_basic_string(text);
        let table: toml::Table = toml::from_str(&format!("path = {quoted}")).unwrap();
        assert_eq!(table["path"].as_str(), Some(text));
    }
}
