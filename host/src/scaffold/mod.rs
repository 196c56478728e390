//! `switchboard plugin new`: a new plugin project, ready to build, test and
//! serve, in Rust, JavaScript or Python. Each language's project is a table
//! of files, each one's path and template (the files in `rust/`, `js/` and
//! `python/`), written by one code path: a plugin that handles `join` and
//! `greet` (rooms, state and an emit, the same in the three languages), a
//! test, a `switchboard.toml` serving the component and a README with the
//! three commands (build, test, serve).
//!
//! - Rust: a crate depending on `switchboard-sdk`, by path (the checkout's
//!   or `--sdk-path`); the SDK carries the WIT.
//! - JavaScript: an npm package built by componentize-js, pinned to the
//!   version `plugins/js/echo` is built with.
//! - Python: a module built by componentize-py, pinned in
//!   `requirements.txt` to the version `plugins/python/requirements.txt` has.
//!
//! JavaScript and Python projects carry the WIT they build against,
//! `wit/plugin.wit` as this binary has it, so they build anywhere.
//!
//! Each test runs by the language's own test command (`cargo test`, `npm
//! test`, `python -m unittest`), which an author and their CI already run.
//! It builds the component with the same command as for serving, so it never
//! tests a stale build, and sends events through `switchboard call`, which
//! loads the component from the project's own manifest as `serve` would: the
//! test covers the manifest (events, namespaces, `config`) as well as the
//! code, and needs no server. So the Rust crate has no default target in
//! `.cargo/config.toml`: its test runs natively.

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

/// A JavaScript plugin project.
const JS_PROJECT: &[(&str, &str)] = &[
    ("package.json", include_str!("js/package.json.tmpl")),
    ("src/plugin.js", include_str!("js/plugin.js.tmpl")),
    ("test/call.test.js", include_str!("js/call.test.js.tmpl")),
    ("switchboard.toml", include_str!("js/switchboard.toml.tmpl")),
    ("README.md", include_str!("js/README.md.tmpl")),
    (".gitignore", include_str!("js/gitignore.tmpl")),
    WIT,
];

/// A Python plugin project.
const PYTHON_PROJECT: &[(&str, &str)] = &[
    (
        "requirements.txt",
        include_str!("python/requirements.txt.tmpl"),
    ),
    ("src/plugin.py", include_str!("python/plugin.py.tmpl")),
    ("test_call.py", include_str!("python/test_call.py.tmpl")),
    (
        "switchboard.toml",
        include_str!("python/switchboard.toml.tmpl"),
    ),
    ("README.md", include_str!("python/README.md.tmpl")),
    (".gitignore", include_str!("python/gitignore.tmpl")),
    WIT,
];

/// The WIT this binary serves, for the projects that do not get it through
/// the SDK; it has no placeholders.
const WIT: (&str, &str) = ("wit/plugin.wit", include_str!("../../../wit/plugin.wit"));

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

impl Language {
    /// The project's files: each one's path and template.
    fn project(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::Rust => RUST_PROJECT,
            Self::JavaScript => JS_PROJECT,
            Self::Python => PYTHON_PROJECT,
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
    /// The SDK a Rust project depends on; the checkout's when `None`.
    pub sdk_path: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error("{0}")]
    InvalidName(String),
    #[error(
        "`--sdk-path` is for Rust plugins only: a `--lang {0}` project carries the WIT it builds \
         against (`wit/plugin.wit`) and needs no SDK; leave `--sdk-path` out"
    )]
    SdkPathNotForLanguage(Language),
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
    let name = NewPluginName::parse(&request.name, request.language)
        .map_err(ScaffoldError::InvalidName)?;
    let dir = request
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(name.as_str()));
    let values = placeholders(&name, request.language, request.sdk_path.as_deref())?;
    ensure_vacant(&dir)?;
    for (file, template) in request.language.project() {
        write_new(&dir.join(file), &render(template, &values))?;
    }
    Ok(dir)
}

/// The templates' placeholders and their values: `{{name}}`,
/// `{{crate_name}}`, and for Rust `{{sdk}}`, the SDK dependency.
fn placeholders(
    name: &NewPluginName,
    language: Language,
    sdk_path: Option<&Path>,
) -> Result<Vec<(&'static str, String)>, ScaffoldError> {
    let mut values = vec![
        ("{{name}}", name.as_str().to_owned()),
        ("{{crate_name}}", name.crate_name()),
        ("{{wit_version}}", wit_version().to_owned()),
    ];
    match (language, sdk_path) {
        (Language::Rust, sdk_path) => values.push(("{{sdk}}", sdk_dependency(sdk_path)?)),
        (other, Some(_)) => return Err(ScaffoldError::SdkPathNotForLanguage(other)),
        (_, None) => {}
    }
    Ok(values)
}

/// The version of the WIT package the projects carry, e.g. `0.2.1`:
/// JavaScript imports name it.
fn wit_version() -> &'static str {
    WIT.1
        .split_once("package switchboard:plugin@")
        .and_then(|(_, rest)| rest.split_once(';'))
        .map_or("", |(version, _)| version)
}

/// `template` with each placeholder replaced by its value.
fn render(template: &str, placeholders: &[(&str, String)]) -> String {
    placeholders
        .iter()
        .fold(template.to_owned(), |text, (placeholder, value)| {
            text.replace(placeholder, value)
        })
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

    const LANGUAGES: [Language; 3] = [Language::Rust, Language::JavaScript, Language::Python];

    fn request(name: &str, dir: PathBuf) -> NewPlugin {
        NewPlugin {
            name: name.to_owned(),
            language: Language::Rust,
            dir: Some(dir),
            sdk_path: None,
        }
    }

    /// `language`'s template for `file`, rendered for `name`.
    fn rendered(language: Language, file: &str, name: &str) -> String {
        let name = NewPluginName::parse(name, language).unwrap();
        let (_, template) = language
            .project()
            .iter()
            .find(|(path, _)| *path == file)
            .unwrap_or_else(|| panic!("{language} has no {file}"));
        render(template, &placeholders(&name, language, None).unwrap())
    }

    #[test]
    fn the_wit_version_is_the_one_the_host_serves() {
        assert!(!wit_version().is_empty());
        assert!(crate::runtime::WORLD.ends_with(&format!("@{}", wit_version())));
    }

    /// A file of this repository.
    fn repository_file(path: &str) -> String {
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)).unwrap()
    }

    /// The files under `dir`, as paths relative to it, sorted.
    fn files_under(dir: &Path) -> Vec<String> {
        let mut files = Vec::new();
        let mut pending = vec![dir.to_owned()];
        while let Some(next) = pending.pop() {
            for entry in fs::read_dir(next).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    pending.push(path);
                } else {
                    let relative = path.strip_prefix(dir).unwrap();
                    files.push(relative.to_string_lossy().into_owned());
                }
            }
        }
        files.sort();
        files
    }

    #[test]
    fn every_placeholder_is_filled_in() {
        for language in LANGUAGES {
            for (file, _) in language.project() {
                let text = rendered(language, file, "my-poll");
                assert!(!text.contains("{{"), "{language} {file}: {text}");
            }
        }
        let manifest = |language| rendered(language, "switchboard.toml", "my-poll");
        let rust = manifest(Language::Rust);
        assert!(rust.contains("release/my_poll.wasm\""), "{rust}");
        for language in [Language::JavaScript, Language::Python] {
            let text = manifest(language);
            assert!(text.contains("path = \"my-poll.wasm\""), "{text}");
        }
    }

    #[test]
    fn each_language_builds_the_component_its_manifest_serves() {
        let name = "my-poll";
        let package: serde_json::Value =
            serde_json::from_str(&rendered(Language::JavaScript, "package.json", name)).unwrap();
        assert_eq!(package["name"], name);
        let build = package["scripts"]["build"].as_str().unwrap();
        assert!(build.ends_with(" -o my-poll.wasm"), "{build}");
        let test = rendered(Language::JavaScript, "test/call.test.js", name);
        assert!(test.contains("const PLUGIN = \"my-poll\";"), "{test}");

        let test = rendered(Language::Python, "test_call.py", name);
        assert!(test.contains("PLUGIN = \"my-poll\"\n"), "{test}");
        assert!(test.contains("\"--output\", f\"{PLUGIN}.wasm\""), "{test}");
        let readme = rendered(Language::Python, "README.md", name);
        assert!(readme.contains("--output my-poll.wasm"), "{readme}");

        for language in LANGUAGES {
            let manifest: toml::Table =
                toml::from_str(&rendered(language, "switchboard.toml", name)).unwrap();
            let plugin = &manifest["plugins"][0];
            assert_eq!(plugin["name"].as_str(), Some(name));
            let events = plugin["events"].as_array().unwrap();
            assert_eq!(events.len(), 2, "{language}");
        }
    }

    #[test]
    fn the_build_tools_are_pinned_to_the_versions_this_repository_tests() {
        let package: serde_json::Value =
            serde_json::from_str(&rendered(Language::JavaScript, "package.json", "p")).unwrap();
        let echo: serde_json::Value =
            serde_json::from_str(&repository_file("plugins/js/echo/package.json")).unwrap();
        assert_eq!(package["devDependencies"], echo["devDependencies"]);
        assert_eq!(
            rendered(Language::Python, "requirements.txt", "p"),
            repository_file("plugins/python/requirements.txt")
        );
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
    fn js_and_python_projects_carry_the_wit_they_build_against() {
        let temp = TempDir::new("scaffold-test");
        let expected = [
            (
                Language::JavaScript,
                [
                    ".gitignore",
                    "README.md",
                    "package.json",
                    "src/plugin.js",
                    "switchboard.toml",
                    "test/call.test.js",
                    "wit/plugin.wit",
                ],
            ),
            (
                Language::Python,
                [
                    ".gitignore",
                    "README.md",
                    "requirements.txt",
                    "src/plugin.py",
                    "switchboard.toml",
                    "test_call.py",
                    "wit/plugin.wit",
                ],
            ),
        ];
        for (language, files) in expected {
            let dir = create(&NewPlugin {
                language,
                ..request("greet", temp.path().join(language.to_string()))
            })
            .unwrap();
            assert_eq!(files_under(&dir), files, "{language}");
            let wit = fs::read_to_string(dir.join("wit/plugin.wit")).unwrap();
            assert_eq!(wit, repository_file("wit/plugin.wit"));
            let readme = fs::read_to_string(dir.join("README.md")).unwrap();
            assert!(readme.starts_with("# greet\n"), "{readme}");
        }
    }

    #[test]
    fn a_bad_name_or_sdk_is_refused_before_anything_is_written() {
        let temp = TempDir::new("scaffold-test");
        let dir = temp.path().join("project");
        let bad_name = create(&request("Greet", dir.clone())).expect_err("bad name");
        assert!(
            matches!(bad_name, ScaffoldError::InvalidName(_)),
            "{bad_name}"
        );
        let keyword = create(&request("fn", dir.clone())).expect_err("a Rust keyword");
        assert!(
            matches!(keyword, ScaffoldError::InvalidName(_)),
            "{keyword}"
        );
        let no_sdk = NewPlugin {
            sdk_path: Some(temp.path().to_owned()),
            ..request("greet", dir.clone())
        };
        assert!(matches!(
            create(&no_sdk),
            Err(ScaffoldError::SdkNotFound(_))
        ));
        for language in [Language::JavaScript, Language::Python] {
            let sdk_for_js = NewPlugin {
                language,
                sdk_path: Some(PathBuf::from(CHECKOUT_SDK)),
                ..request("greet", dir.clone())
            };
            let error = create(&sdk_for_js).expect_err("an SDK path");
            assert_eq!(
                error.to_string().split(':').next(),
                Some("`--sdk-path` is for Rust plugins only"),
                "{language}"
            );
        }
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
