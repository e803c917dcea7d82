//! Configuration diagnostics: each names the file, line and column, the
//! service it concerns, and what to do about it.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Warning,
    Error,
}

/// Where in a file a diagnostic points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    /// The whole source line, for the snippet.
    pub source_line: String,
    /// How many characters to underline.
    pub width: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub service: Option<String>,
    pub message: String,
    pub location: Option<Box<Location>>,
    /// A path the diagnostic is about when it is not about the config text
    /// (a binary, a services folder).
    pub path: Option<PathBuf>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            service: None,
            message: message.into(),
            location: None,
            path: None,
            help: None,
        }
    }

    pub fn warning(message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(message)
        }
    }

    pub fn service(mut self, name: impl Into<String>) -> Self {
        self.service = Some(name.into());
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn path(mut self, path: impl Into<PathBuf>) -> Self {
        self.path = Some(path.into());
        self
    }

    pub fn at(mut self, source: &SourceText, span: Option<Range<usize>>) -> Self {
        self.location = span.and_then(|s| source.locate(s)).map(Box::new);
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// One line: `file:line:col: service `x`: message`.
    pub fn short(&self) -> String {
        let mut out = String::new();
        if let Some(loc) = &self.location {
            out.push_str(&format!(
                "{}:{}:{}: ",
                loc.file.display(),
                loc.line,
                loc.column
            ));
        } else if let Some(path) = &self.path {
            out.push_str(&format!("{}: ", path.display()));
        }
        if let Some(service) = &self.service {
            out.push_str(&format!("service `{service}`: "));
        }
        out.push_str(&self.message);
        out
    }
}

/// Renders like a compiler diagnostic:
///
/// ```text
/// error: service `web`: unknown field `binray_path`
///   --> blackhole.toml:12:1
///    |
/// 12 | binray_path = "x"
///    | ^^^^^^^^^^^
///    = help: ...
/// ```
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{label}: ")?;
        if let Some(service) = &self.service {
            write!(f, "service `{service}`: ")?;
        }
        write!(f, "{}", self.message)?;
        if let Some(loc) = &self.location {
            let num = loc.line.to_string();
            let pad = " ".repeat(num.len());
            write!(
                f,
                "\n{pad}--> {}:{}:{}",
                loc.file.display(),
                loc.line,
                loc.column
            )?;
            write!(f, "\n{pad} |\n{num} | {}", loc.source_line)?;
            write!(
                f,
                "\n{pad} | {}{}",
                " ".repeat(loc.column.saturating_sub(1)),
                "^".repeat(loc.width.max(1))
            )?;
            if let Some(help) = &self.help {
                write!(f, "\n{pad} = help: {help}")?;
            }
        } else {
            if let Some(path) = &self.path {
                write!(f, "\n  --> {}", path.display())?;
            }
            if let Some(help) = &self.help {
                write!(f, "\n  = help: {help}")?;
            }
        }
        Ok(())
    }
}

/// The text of a configuration file and its name, to turn byte spans into
/// line and column.
#[derive(Clone, Debug)]
pub struct SourceText {
    pub file: PathBuf,
    pub text: String,
    /// Where each line starts, found on the first `locate`: every service
    /// locates its table, and scanning from the top each time made loading
    /// 1000 services quadratic (50 ms).
    line_starts: std::sync::OnceLock<Vec<usize>>,
}

impl SourceText {
    pub fn new(file: impl AsRef<Path>, text: impl Into<String>) -> Self {
        SourceText {
            file: file.as_ref().to_path_buf(),
            text: text.into(),
            line_starts: std::sync::OnceLock::new(),
        }
    }

    fn line_starts(&self) -> &[usize] {
        self.line_starts.get_or_init(|| {
            std::iter::once(0)
                .chain(self.text.match_indices('\n').map(|(i, _)| i + 1))
                .collect()
        })
    }

    pub fn locate(&self, span: Range<usize>) -> Option<Location> {
        let start = span.start.min(self.text.len());
        let end = span.end.clamp(start, self.text.len());
        if !self.text.is_char_boundary(start) || !self.text.is_char_boundary(end) {
            return None;
        }
        let starts = self.line_starts();
        // The last line starting at or before `start`.
        let index = starts.partition_point(|&s| s <= start) - 1;
        let line_start = starts[index];
        let line_end = starts
            .get(index + 1)
            .map_or(self.text.len(), |next| next - 1);
        let line = index + 1;
        let column = self.text[line_start..start].chars().count() + 1;
        let source_line = self.text[line_start..line_end]
            .trim_end_matches('\r')
            .to_string();
        let width = self.text[start..end.min(line_end)].chars().count();
        Some(Location {
            file: self.file.clone(),
            line,
            column,
            source_line,
            width,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_spans() {
        let src = SourceText::new("b.toml", "[a]\nkey = 1\n");
        let loc = src.locate(10..11).unwrap();
        assert_eq!((loc.line, loc.column, loc.width), (2, 7, 1));
        assert_eq!(loc.source_line, "key = 1");
        let d = Diagnostic::error("bad").service("web").at(&src, Some(4..7));
        assert_eq!(d.short(), "b.toml:2:1: service `web`: bad");
        assert!(d.to_string().contains("2 | key = 1\n  | ^^^"), "{d}");
    }
}
