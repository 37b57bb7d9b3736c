//! The file source: a declarative file read at start and on every reload.

use crate::config::Config;
use crate::declarative;
use crate::validate::FieldError;
use std::path::{Path, PathBuf};

/// Why a file could not be loaded. Either way nothing of it is applied.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error from the OS.
        source: std::io::Error,
    },
    /// The file was read but is not a valid config; every problem is listed.
    #[error("{path} has {} error(s):\n{}", errors.len(), list(errors))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        errors: Vec<FieldError>,
    },
}

fn list(errors: &[FieldError]) -> String {
    errors.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n")
}

/// A declarative file on disk.
#[derive(Debug, Clone)]
pub struct FileSource {
    path: PathBuf,
}

impl FileSource {
    /// A source reading `path`.
    pub fn new(path: impl Into<PathBuf>) -> FileSource {
        FileSource { path: path.into() }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads and validates the whole file. Any error refuses the whole file: a file is one
    /// config, and serving part of it would be a config nobody wrote.
    pub fn load(&self) -> Result<Config, LoadError> {
        let text =
            std::fs::read_to_string(&self.path).map_err(|source| LoadError::Io { path: self.path.clone(), source })?;
        declarative::parse(&text).map_err(|errors| LoadError::Invalid { path: self.path.clone(), errors })
    }
}
