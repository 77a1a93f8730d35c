//! Include and exclude globs over entry paths, as a file-share-like plugin offers them.
//! A pattern without a `/` matches a name at any depth (`*.log`, `node_modules`); one
//! with a `/` matches the whole path from the root (`var/cache/**`, a leading `/` is
//! allowed and ignored). `*` and `?` stay within one component, `**` crosses them, and
//! `[...]`, `{a,b}` and `\` escapes work as in `globset`, which does the matching.

use std::fmt;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

/// A pattern that could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    /// The pattern as given.
    pub pattern: String,
    /// Why it is invalid.
    pub cause: String,
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "glob {:?} is invalid: {}", self.pattern, self.cause)
    }
}

impl std::error::Error for PatternError {}

/// A compiled set of patterns.
#[derive(Debug, Clone)]
pub struct Patterns {
    set: GlobSet,
}

impl Patterns {
    /// Compiles `patterns`.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, PatternError> {
        let mut builder = GlobSetBuilder::new();
        for pattern in patterns {
            builder.add(compile(pattern.as_ref())?);
        }
        let set = builder.build().map_err(|err| PatternError {
            pattern: String::new(),
            cause: err.to_string(),
        })?;
        Ok(Self { set })
    }

    /// Whether no pattern was given.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Whether any pattern matches the entry path `path`.
    pub fn matches(&self, path: &str) -> bool {
        self.set.is_match(path)
    }
}

fn compile(pattern: &str) -> Result<Glob, PatternError> {
    let invalid = |cause: String| PatternError {
        pattern: pattern.to_owned(),
        cause,
    };
    let trimmed = pattern.trim_end_matches('/');
    let anchored = trimmed.contains('/');
    let body = trimmed.trim_start_matches('/');
    if body.is_empty() {
        return Err(invalid("it matches no path".to_owned()));
    }
    let full = if anchored {
        body.to_owned()
    } else {
        format!("**/{body}")
    };
    GlobBuilder::new(&full)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|err| invalid(err.kind().to_string()))
}

/// Which entries a capture takes: with no include pattern everything not excluded; with
/// include patterns only what they match, plus everything below a directory they match.
/// An exclude wins over an include, and an excluded directory is not descended into.
#[derive(Debug, Clone)]
pub struct PathFilter {
    include: Patterns,
    exclude: Patterns,
}

impl PathFilter {
    /// Compiles the include and exclude patterns.
    pub fn new<S: AsRef<str>>(include: &[S], exclude: &[S]) -> Result<Self, PatternError> {
        Ok(Self {
            include: Patterns::new(include)?,
            exclude: Patterns::new(exclude)?,
        })
    }

    /// A filter that takes everything.
    pub fn everything() -> Self {
        let none = || Patterns {
            set: GlobSet::empty(),
        };
        Self {
            include: none(),
            exclude: none(),
        }
    }

    /// Whether include patterns restrict the capture.
    pub fn has_includes(&self) -> bool {
        !self.include.is_empty()
    }

    /// Whether `path` is excluded (and, for a directory, everything below it).
    pub fn is_excluded(&self, path: &str) -> bool {
        self.exclude.matches(path)
    }

    /// Whether an include pattern matches `path` itself; true for every path when there
    /// are no include patterns. Callers track directories that matched, since everything
    /// below them is included too.
    pub fn is_included(&self, path: &str) -> bool {
        self.include.is_empty() || self.include.matches(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(include: &[&str], exclude: &[&str]) -> PathFilter {
        PathFilter::new(include, exclude).unwrap()
    }

    #[test]
    fn everything_passes_without_patterns() {
        let f = PathFilter::everything();
        assert!(!f.has_includes());
        assert!(f.is_included("a/b"));
        assert!(!f.is_excluded("a/b"));
    }

    #[test]
    fn names_match_at_any_depth() {
        let f = filter(&[], &["*.log", "node_modules"]);
        assert!(f.is_excluded("x.log"));
        assert!(f.is_excluded("a/b/x.log"));
        assert!(f.is_excluded("app/node_modules"));
        assert!(!f.is_excluded("x.log.gz"));
        assert!(!f.is_excluded("node_modules_old"));
    }

    #[test]
    fn paths_match_from_the_root() {
        let f = filter(&[], &["var/cache", "/tmp/*", "src/**/*.o"]);
        assert!(f.is_excluded("var/cache"));
        assert!(!f.is_excluded("x/var/cache"));
        assert!(f.is_excluded("tmp/a"));
        assert!(!f.is_excluded("tmp/a/b"), "`*` does not cross `/`");
        assert!(f.is_excluded("src/x.o"));
        assert!(f.is_excluded("src/a/b/x.o"));
    }

    #[test]
    fn includes_restrict() {
        let f = filter(&["docs", "*.txt"], &["secret.txt"]);
        assert!(f.has_includes());
        assert!(f.is_included("docs"));
        assert!(f.is_included("a/b.txt"));
        assert!(!f.is_included("a/b.md"));
        assert!(f.is_excluded("a/secret.txt"));
    }

    #[test]
    fn classes_alternatives_and_escapes() {
        let f = filter(&[], &["file[0-9]", "*.{jpg,png}", "lit\\*"]);
        assert!(f.is_excluded("file7"));
        assert!(!f.is_excluded("fileA"));
        assert!(f.is_excluded("a/p.png"));
        assert!(f.is_excluded("lit*"));
        assert!(!f.is_excluded("literal"));
    }

    #[test]
    fn refuses_bad_patterns() {
        let err = PathFilter::new(&["[unclosed"], &[]).unwrap_err();
        assert_eq!(err.pattern, "[unclosed");
        assert!(err.to_string().contains("\"[unclosed\""), "{err}");
        assert!(PathFilter::new(&["/"], &[]).is_err());
        assert!(PathFilter::new(&[""], &[]).is_err());
    }
}
