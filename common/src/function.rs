//! Function addresses: `extension.runner.function`.

use std::fmt;

/// Longest accepted segment of a function address, in bytes.
pub const MAX_SEGMENT_LEN: usize = 64;

/// A parsed function address `extension.runner.function`, e.g. `http.request.get`.
///
/// Each segment is 1 to [`MAX_SEGMENT_LEN`] bytes of lowercase ASCII letters, digits and `_`, starting
/// with a letter, so that it is safe as an AMQP routing-key word and a policy path segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FunctionName {
    /// The extension, e.g. `http`.
    pub extension: String,
    /// The runner, e.g. `request`.
    pub runner: String,
    /// The function, e.g. `get`.
    pub function: String,
}

impl FunctionName {
    /// Parses `extension.runner.function`. The error says what is wrong, for an `INVALID_ARGUMENT`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('.').collect();
        let [extension, runner, function] = parts.as_slice() else {
            return Err(format!("must be extension.runner.function, got {s:?}"));
        };
        for segment in [extension, runner, function] {
            validate_segment(segment)?;
        }
        Ok(Self { extension: (*extension).to_owned(), runner: (*runner).to_owned(), function: (*function).to_owned() })
    }

    /// The AMQP routing key of this function: `extension.runner.function`.
    pub fn routing_key(&self) -> String {
        self.to_string()
    }
}

/// Checks one segment (an extension, runner or function name); the error names the reason.
pub fn validate_segment(segment: &str) -> Result<(), String> {
    if segment.is_empty() || segment.len() > MAX_SEGMENT_LEN {
        return Err(format!("segment {segment:?} must be 1 to {MAX_SEGMENT_LEN} bytes"));
    }
    let mut chars = segment.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    if !first_ok || !segment.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
        return Err(format!("segment {segment:?} must start with a lowercase letter and hold only a-z, 0-9 and _"));
    }
    Ok(())
}

impl fmt::Display for FunctionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.extension, self.runner, self.function)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_three_segments() {
        let f = FunctionName::parse("http.request.get").expect("valid");
        assert_eq!((f.extension.as_str(), f.runner.as_str(), f.function.as_str()), ("http", "request", "get"));
        assert_eq!(f.to_string(), "http.request.get");
    }

    #[test]
    fn rejects_bad_addresses() {
        for bad in [
            "",
            "http",
            "http.request",
            "a.b.c.d",
            "Http.request.get",
            "http..get",
            "http.re quest.get",
            "http.request.*",
            "1http.request.get",
            "http.request.#",
        ] {
            assert!(FunctionName::parse(bad).is_err(), "{bad:?} must be rejected");
        }
        assert!(FunctionName::parse(&format!("{}.r.f", "a".repeat(65))).is_err());
    }
}
