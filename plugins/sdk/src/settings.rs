//! Reading a job's settings. Values always travel as strings and a repeatable setting
//! arrives once per value; the host checks names and kinds against the plugin's
//! `setting-spec`s, but a plugin still parses values itself and must not trust them, so
//! every parse failure becomes an `invalid-settings` error naming the setting and value.

use crate::types::{PluginError, Setting};

/// A job's settings, borrowed from its request.
#[derive(Debug, Clone, Copy)]
pub struct Settings<'a> {
    pairs: &'a [Setting],
}

impl<'a> Settings<'a> {
    /// Wraps the settings of a request.
    pub fn new(pairs: &'a [Setting]) -> Self {
        Self { pairs }
    }

    /// The value of a single-valued setting, or `None` if it is absent. Giving such a
    /// setting twice is refused rather than silently taking one of the values.
    pub fn get(&self, name: &str) -> Result<Option<&'a str>, PluginError> {
        let mut values = self.values(name);
        let first = values.next();
        if values.next().is_some() {
            return Err(PluginError::InvalidSettings(format!(
                "setting `{name}` is given more than once"
            )));
        }
        Ok(first)
    }

    /// The value of a setting that must be present.
    pub fn require(&self, name: &str) -> Result<&'a str, PluginError> {
        self.get(name)?
            .ok_or_else(|| PluginError::InvalidSettings(format!("setting `{name}` is required")))
    }

    /// Every value of a repeatable setting, in the order given.
    pub fn all(&self, name: &str) -> Vec<&'a str> {
        self.values(name).collect()
    }

    /// A boolean setting, or `default` if it is absent.
    pub fn bool(&self, name: &str, default: bool) -> Result<bool, PluginError> {
        self.get(name)?.map_or(Ok(default), |value| {
            parse_bool(value).ok_or_else(|| {
                PluginError::InvalidSettings(format!(
                    "setting `{name}` must be true or false, not {value:?}"
                ))
            })
        })
    }

    /// An integer setting, or `default` if it is absent.
    pub fn int(&self, name: &str, default: i64) -> Result<i64, PluginError> {
        self.get(name)?.map_or(Ok(default), |value| {
            parse_int(value).ok_or_else(|| {
                PluginError::InvalidSettings(format!(
                    "setting `{name}` must be an integer, not {value:?}"
                ))
            })
        })
    }

    fn values(&self, name: &str) -> impl Iterator<Item = &'a str> {
        self.pairs
            .iter()
            .filter(move |(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Parses a boolean the way people write one in a configuration: `true`/`false`,
/// `yes`/`no`, `on`/`off` or `1`/`0`, in any case.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Some(true),
        "false" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// Parses a decimal integer, allowing `_` between digits for readability.
pub fn parse_int(value: &str) -> Option<i64> {
    let value = value.trim();
    let digits = value.strip_prefix(['-', '+']).unwrap_or(value);
    if digits.is_empty() || digits.starts_with('_') || digits.ends_with('_') {
        return None;
    }
    value.replace('_', "").parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<Setting> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn reads_single_and_repeated_values() {
        let pairs = pairs(&[("include", "a"), ("mode", "x"), ("include", "b")]);
        let settings = Settings::new(&pairs);
        assert_eq!(settings.get("mode"), Ok(Some("x")));
        assert_eq!(settings.get("absent"), Ok(None));
        assert_eq!(settings.all("include"), ["a", "b"]);
        assert!(settings.all("absent").is_empty());
        assert!(
            matches!(settings.get("include"), Err(PluginError::InvalidSettings(m)) if m.contains("`include`"))
        );
        assert!(
            matches!(settings.require("absent"), Err(PluginError::InvalidSettings(m)) if m.contains("required"))
        );
    }

    #[test]
    fn parses_booleans() {
        let pairs = pairs(&[("a", "Yes"), ("b", "0"), ("c", "maybe")]);
        let settings = Settings::new(&pairs);
        assert_eq!(settings.bool("a", false), Ok(true));
        assert_eq!(settings.bool("b", true), Ok(false));
        assert_eq!(settings.bool("absent", true), Ok(true));
        let err = settings.bool("c", false).unwrap_err();
        assert!(
            matches!(err, PluginError::InvalidSettings(m) if m.contains("`c`") && m.contains("\"maybe\""))
        );
    }

    #[test]
    fn parses_integers() {
        assert_eq!(parse_int("42"), Some(42));
        assert_eq!(parse_int(" -7 "), Some(-7));
        assert_eq!(parse_int("+1_000_000"), Some(1_000_000));
        assert_eq!(parse_int("_1"), None);
        assert_eq!(parse_int("1_"), None);
        assert_eq!(parse_int("0x10"), None);
        assert_eq!(parse_int("99999999999999999999"), None);
        let pairs = pairs(&[("n", "ten")]);
        assert!(Settings::new(&pairs).int("n", 0).is_err());
        assert_eq!(Settings::new(&pairs).int("m", 3), Ok(3));
    }
}
