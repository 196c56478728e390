//! The name of a new plugin: the manifest's plugin name, which is also the
//! package's (cargo's, npm's) and the component's file name. The manifest's
//! rule makes a name npm takes; a Rust project's name must satisfy cargo too.

use super::Language;
use crate::manifest::PluginName;

/// Lowercase names cargo refuses or that would break the crate: Rust
/// keywords (strict and reserved, 2024 edition) and the built-in libraries.
const RESERVED: &[&str] = &[
    "abstract",
    "alloc",
    "as",
    "async",
    "await",
    "become",
    "box",
    "break",
    "const",
    "continue",
    "core",
    "crate",
    "do",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "final",
    "fn",
    "for",
    "gen",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "macro",
    "match",
    "mod",
    "move",
    "mut",
    "override",
    "priv",
    "proc_macro",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "std",
    "struct",
    "super",
    "test",
    "trait",
    "true",
    "try",
    "type",
    "typeof",
    "unsafe",
    "unsized",
    "use",
    "virtual",
    "where",
    "while",
    "yield",
];

/// A name the manifest and the language's package manager accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPluginName(PluginName);

impl NewPluginName {
    /// The name of a plugin in `language`, or why it cannot be one.
    pub fn parse(name: &str, language: Language) -> Result<Self, String> {
        let name = PluginName::parse(name)?;
        let crate_name = crate_name(name.as_str());
        if language == Language::Rust && RESERVED.contains(&crate_name.as_str()) {
            return Err(format!(
                "invalid plugin name `{name}`: `{crate_name}` is a Rust keyword or a built-in \
                 library, which cargo refuses as a package name; pick another name"
            ));
        }
        Ok(Self(name))
    }

    /// As the manifest and `Cargo.toml` or `package.json` spell it.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// As Rust spells it, and as cargo names the component:
    /// `target/wasm32-wasip2/release/{crate_name}.wasm`.
    pub fn crate_name(&self) -> String {
        crate_name(self.as_str())
    }
}

fn crate_name(package: &str) -> String {
    package.replace('-', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_names_that_cargo_takes_are_accepted() {
        for name in ["greet", "my-plugin", "poll_2", "a", &"x".repeat(64)] {
            assert_eq!(
                NewPluginName::parse(name, Language::Rust).map(|n| n.0.to_string()),
                Ok(name.to_owned())
            );
        }
        let name = NewPluginName::parse("my-poll_2", Language::Rust).unwrap();
        assert_eq!(name.crate_name(), "my_poll_2");
    }

    #[test]
    fn names_the_manifest_refuses_are_refused_with_its_rule() {
        for name in [
            "",
            "2fa",
            "-x",
            "_x",
            "Greet",
            "my plugin",
            "café",
            "a.b",
            "a/b",
            &"x".repeat(65),
        ] {
            for language in [Language::Rust, Language::JavaScript, Language::Python] {
                let error = NewPluginName::parse(name, language).expect_err(name);
                assert!(
                    error.contains("lowercase letters, digits"),
                    "{name}: {error}"
                );
            }
        }
    }

    #[test]
    fn keywords_and_built_in_libraries_are_refused_for_rust_only() {
        for name in [
            "fn",
            "self",
            "test",
            "std",
            "core",
            "proc-macro",
            "async",
            "gen",
        ] {
            let error = NewPluginName::parse(name, Language::Rust).expect_err(name);
            assert!(
                error.contains("Rust keyword or a built-in library"),
                "{name}: {error}"
            );
            for language in [Language::JavaScript, Language::Python] {
                assert!(NewPluginName::parse(name, language).is_ok(), "{name}");
            }
        }
    }
}
