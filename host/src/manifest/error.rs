use std::fmt;
use std::path::{Path, PathBuf};

/// A place in a manifest file, shown as `path:line:column`, or the
/// environment variable a setting came from instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    /// Set when the value came from this environment variable.
    pub variable: Option<&'static str>,
}

impl Location {
    /// Turns a byte offset into a 1-based line and column.
    pub fn at(path: &Path, source: &str, offset: usize) -> Self {
        let before = &source[..offset.min(source.len())];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
        Self {
            path: path.to_owned(),
            line,
            column: before[line_start..].chars().count() + 1,
            variable: None,
        }
    }

    /// The value of environment variable `variable`, standing in for the manifest at `path`.
    pub fn variable(path: &Path, variable: &'static str) -> Self {
        Self {
            path: path.to_owned(),
            line: 0,
            column: 0,
            variable: Some(variable),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.variable {
            Some(variable) => write!(f, "{variable} (for {})", self.path.display()),
            None => write!(f, "{}:{}:{}", self.path.display(), self.line, self.column),
        }
    }
}

/// Why a manifest could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read manifest {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Bad TOML, a wrong type or an unknown field.
    #[error("{location}: {message}")]
    Syntax { location: Location, message: String },
    /// Well-formed but inconsistent: duplicate claims, bad names, bad values.
    #[error("{location}: {message}")]
    Invalid { location: Location, message: String },
    /// An environment variable standing in for a setting holds no valid value.
    #[error("{variable}: {message}")]
    Environment {
        variable: &'static str,
        message: String,
    },
}

impl ManifestError {
    pub fn location(&self) -> Option<&Location> {
        match self {
            Self::Read { .. } | Self::Environment { .. } => None,
            Self::Syntax { location, .. } | Self::Invalid { location, .. } => Some(location),
        }
    }
}
