//! Validation of policies and of the names Legion uses in resource paths.
//!
//! A policy comes from callers as `{"name", "rules":[{"path","capabilities":[…]}]}` (DESIGN.md section
//! 6). What is accepted follows Vault's policy syntax: a `*` only as the last character of a path, `+`
//! only as a whole segment, and no `+*` (OpenBao refuses it). Names that appear as one segment of a
//! resource path (policies, API keys, chains, schedules) are restricted so that no name can reach
//! another resource: no `/`, no `..`, no wildcards, lowercase only.

use std::collections::BTreeSet;

use super::{Capability, Policy, Rule};

/// Most rules in one policy.
pub const MAX_RULES: usize = 256;
/// Longest rule path, in bytes.
pub const MAX_PATH_BYTES: usize = 512;
/// Longest name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;

/// What is wrong with a policy or a name: the field (`rules[2].path`) and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    /// The field at fault, e.g. `name`, `rules[0].capabilities[1]`.
    pub field: String,
    /// Why it is refused.
    pub reason: String,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Invalid {
    Invalid { field: field.into(), reason: reason.into() }
}

/// Checks a name used as one resource-path segment: 1 to [`MAX_NAME_BYTES`] bytes of `a-z`, `0-9`, `_`,
/// `-` and `.`, starting with a letter or digit, and not containing `..`.
///
/// # Errors
/// [`Invalid`] naming `field`.
pub fn validate_name(field: &str, name: &str) -> Result<(), Invalid> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(invalid(field, format!("must be 1 to {MAX_NAME_BYTES} bytes")));
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.')) {
        return Err(invalid(field, format!("{name:?} may hold only a-z, 0-9, _, - and .")));
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(invalid(field, format!("{name:?} must start with a letter or digit")));
    }
    if name.contains("..") {
        return Err(invalid(field, format!("{name:?} must not contain \"..\"")));
    }
    Ok(())
}

/// Checks one rule path: 1 to [`MAX_PATH_BYTES`] bytes of printable ASCII without spaces, `*` only as
/// the last character, `+` only as a whole segment and not followed by `*`, no empty or `.`/`..`
/// segment.
///
/// # Errors
/// [`Invalid`] naming `field`.
pub fn validate_rule_path(field: &str, path: &str) -> Result<(), Invalid> {
    if path.is_empty() || path.len() > MAX_PATH_BYTES {
        return Err(invalid(field, format!("must be 1 to {MAX_PATH_BYTES} bytes")));
    }
    if !path.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(field, format!("{path:?} may hold only printable ASCII without spaces")));
    }
    if path.starts_with('/') {
        return Err(invalid(field, format!("{path:?} must not start with /")));
    }
    if let Some(star) = path.find('*')
        && star != path.len() - 1
    {
        return Err(invalid(field, format!("{path:?}: * is allowed only at the end")));
    }
    let body = path.strip_suffix('*').unwrap_or(path);
    let segments: Vec<&str> = body.split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        let last = i == segments.len() - 1;
        if segment.contains('+') && *segment != "+" {
            return Err(invalid(field, format!("{path:?}: + must be a whole segment")));
        }
        if *segment == "+" && last && path.ends_with('*') {
            return Err(invalid(field, format!("{path:?}: +* is not a valid segment")));
        }
        if *segment == "." || *segment == ".." {
            return Err(invalid(field, format!("{path:?}: . and .. segments are not allowed")));
        }
        if segment.is_empty() && !last {
            return Err(invalid(field, format!("{path:?}: empty segment")));
        }
    }
    Ok(())
}

/// A policy from its name and rules as callers give them (`capabilities` as names).
///
/// # Errors
/// [`Invalid`] naming the field: `name`, `rules`, `rules[i].path`, `rules[i].capabilities[j]`.
pub fn parse_policy(name: &str, rules: &[(String, Vec<String>)]) -> Result<Policy, Invalid> {
    validate_name("name", name)?;
    if rules.is_empty() {
        return Err(invalid("rules", "a policy needs at least one rule"));
    }
    if rules.len() > MAX_RULES {
        return Err(invalid("rules", format!("at most {MAX_RULES} rules")));
    }
    let mut parsed = Vec::with_capacity(rules.len());
    for (i, (path, capabilities)) in rules.iter().enumerate() {
        validate_rule_path(&format!("rules[{i}].path"), path)?;
        if capabilities.is_empty() {
            return Err(invalid(format!("rules[{i}].capabilities"), "needs at least one capability"));
        }
        let mut set = BTreeSet::new();
        for (j, c) in capabilities.iter().enumerate() {
            let capability: Capability =
                c.parse().map_err(|reason: String| invalid(format!("rules[{i}].capabilities[{j}]"), reason))?;
            set.insert(capability);
        }
        parsed.push(Rule { path: path.clone(), capabilities: set });
    }
    Ok(Policy { name: name.to_owned(), rules: parsed })
}

/// Checks a path asked about in a capabilities question: like a rule path, but wildcards are literal.
///
/// # Errors
/// [`Invalid`] naming `field`.
pub fn validate_query_path(field: &str, path: &str) -> Result<(), Invalid> {
    if path.is_empty() || path.len() > MAX_PATH_BYTES {
        return Err(invalid(field, format!("must be 1 to {MAX_PATH_BYTES} bytes")));
    }
    if !path.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(field, format!("{path:?} may hold only printable ASCII without spaces")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(items: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
        items.iter().map(|(p, c)| ((*p).to_owned(), c.iter().map(|s| (*s).to_owned()).collect())).collect()
    }

    #[test]
    fn names_cannot_reach_other_resources() {
        for good in ["ops", "team-a", "a.b_c", "0day"] {
            validate_name("name", good).expect(good);
        }
        for bad in ["", "Ops", "a/b", "..", "a..b", ".hidden", "-x", "a*", "a+b", "a b", "é", &"x".repeat(65)] {
            let err = validate_name("name", bad).expect_err(bad);
            assert_eq!(err.field, "name");
        }
    }

    #[test]
    fn rule_paths_follow_vault_syntax() {
        for good in ["*", "tasks/*", "tasks/core/util/echo", "tasks/+/util/echo", "tasks/+/util/*", "tasks/co*", "a/"] {
            validate_rule_path("p", good).expect(good);
        }
        for bad in [
            "",
            "/tasks",
            "tasks/*/x",
            "ta*sks",
            "tasks/a+/x",
            "tasks/+*",
            "tasks//x",
            "tasks/../x",
            "tasks/./x",
            "a b",
        ] {
            let err = validate_rule_path("rules[0].path", bad).expect_err(bad);
            assert_eq!(err.field, "rules[0].path", "{bad}");
        }
    }

    #[test]
    fn policies_name_the_field_at_fault() {
        let p = parse_policy("ops", &rules(&[("tasks/*", &["create", "read"])])).expect("valid");
        assert_eq!(p.rules[0].capabilities, BTreeSet::from([Capability::Create, Capability::Read]));
        let err = parse_policy("ops", &rules(&[("tasks/*", &["read"]), ("x", &["read", "write"])])).expect_err("bad");
        assert_eq!(err.field, "rules[1].capabilities[1]");
        assert!(err.reason.contains("write"), "{err}");
        assert_eq!(parse_policy("ops", &[]).expect_err("empty").field, "rules");
        assert_eq!(parse_policy("ops", &rules(&[("x", &[])])).expect_err("no caps").field, "rules[0].capabilities");
        assert_eq!(parse_policy("Ops", &rules(&[("x", &["read"])])).expect_err("name").field, "name");
        let many = vec![("x".to_owned(), vec!["read".to_owned()]); MAX_RULES + 1];
        assert_eq!(parse_policy("ops", &many).expect_err("too many").field, "rules");
    }
}
