//! Conditions of chain relationships in LegionIO's rule format, with Legion's stricter semantics
//! (DESIGN.md section 4). Pure: no I/O.
//!
//! # Format
//! A rule is a group `{"all":[rule,…]}` (holds when every rule holds; stops at the first that does
//! not), a group `{"any":[rule,…]}` (holds when one rule holds; stops at the first that does), or a
//! leaf `{"fact":"results.status","operator":"equal","value":200}`. Groups nest, at most
//! [`MAX_DEPTH`] deep, and a document holds at most [`MAX_LEAVES`] leaves. Anything else is refused
//! by [`Condition::parse`] with a [`FieldError`] naming the exact sub-path, e.g.
//! `relationships[2].conditions.all[0].any[1].operator: unknown operator "equals" (…)`.
//!
//! # Facts
//! A fact is a dotted path into the context `{"results": …, "args": …, "task": …}`: an object
//! segment is a key, an array segment a decimal index (ASCII digits only), e.g.
//! `results.items.0.name`. Its first segment must be `results`, `args` or `task` (anything else could
//! only ever be nil, so it is refused as a typo). A path through a missing key, an index out of range, a non-numeric
//! segment on an array or a scalar gives **nil**, and so does JSON `null`.
//!
//! # Operators
//! | operator | holds when the fact is |
//! |---|---|
//! | `equal`, `not_equal` | equal (not equal) to `value`: numbers compare as numbers (`200` equals `200.0`), also inside arrays and objects; other values by JSON equality, so `"200"` is `not_equal` to `200` |
//! | `greater_than`, `less_than`, `greater_or_equal`, `less_or_equal` | ordered against `value`: two numbers numerically, two strings lexicographically by Unicode scalar; any other pairing is false (a `value` that is neither a number nor a string is refused at parse) |
//! | `between` | within `[low, high]` inclusive (two numbers or two strings, `low <= high`) |
//! | `contains` | a string containing the string `value`, an array with an element equal to `value`, or an object with the key `value` |
//! | `starts_with`, `ends_with` | a string starting (ending) with the string `value` |
//! | `matches` | a string in which the regex `value` finds a match (not anchored; linear time) |
//! | `in_set`, `not_in_set` | equal (equal to none) of the elements of the array `value` |
//! | `size_equal` | a string of `value` chars, or an array or object of `value` elements |
//! | `nil`, `not_nil` | nil (not nil) |
//! | `is_true`, `is_false` | exactly the boolean `true` (`false`) |
//! | `is_string`, `is_array`, `is_integer` | a string, an array, a number without fractional part (`3`, `3.0`) |
//! | `empty`, `not_empty` | `""`, `[]`, `{}` or nil (a string, array or object that is not empty) |
//!
//! Numbers: two integers (i64 or u64) compare exactly; when either is a float both compare as f64.
//!
//! # Differences from LegionIO
//! A malformed rule or an unknown operator is refused when the relationship is applied, not when it
//! fires. A missing fact is nil, and **nil never satisfies an operator with a value**, not even
//! `not_equal` or `not_in_set`. Arrays and objects are addressable by fact paths.

use std::cmp::Ordering;

use regex::{Regex, RegexBuilder};
use serde_json::{Map, Value};

use self::values::{as_size, compare, cut, is_integer, json_eq, kind, quote, resolve, size};
use super::FieldError;

mod values;

#[cfg(test)]
mod parse_tests;
#[cfg(test)]
mod tests;

/// Most `all`/`any` groups nested in one another in one condition (the outermost counts as one).
pub const MAX_DEPTH: usize = 32;

/// Most leaf rules in one condition.
pub const MAX_LEAVES: usize = 1000;

/// Size limit in bytes of a compiled `matches` pattern (`regex::RegexBuilder::size_limit`): a larger
/// pattern is refused when the condition is parsed.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Most characters of a fact name, a fact value or a rule value quoted in [`Evaluation::reason`]
/// (values as compact JSON); longer ones are cut and end with `…`.
pub const MAX_QUOTED_CHARS: usize = 100;

/// Every operator, in the order of DESIGN.md section 4.
pub const OPERATORS: [&str; 23] = [
    "equal",
    "not_equal",
    "greater_than",
    "less_than",
    "greater_or_equal",
    "less_or_equal",
    "between",
    "contains",
    "starts_with",
    "ends_with",
    "matches",
    "in_set",
    "not_in_set",
    "size_equal",
    "nil",
    "not_nil",
    "is_true",
    "is_false",
    "is_string",
    "is_array",
    "is_integer",
    "empty",
    "not_empty",
];

/// The operators that take no `value` (absent or `null`); every other operator requires one.
pub const ONE_SIDED_OPERATORS: [&str; 9] =
    ["nil", "not_nil", "is_true", "is_false", "is_string", "is_array", "is_integer", "empty", "not_empty"];

/// The keys a leaf rule may have.
const LEAF_KEYS: [&str; 3] = ["fact", "operator", "value"];

/// A parsed, validated rule tree (regexes compiled), ready to evaluate any number of times.
#[derive(Debug, Clone)]
pub struct Condition {
    root: Node,
}

/// The outcome of evaluating a [`Condition`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// Whether the rule holds.
    pub satisfied: bool,
    /// Why it does not hold, for an operator, naming the leaf that failed, e.g.
    /// `results.status (200) not_equal 200 is false`, `results.status is nil` or
    /// `none of 2 rules of any holds: …`; empty when it holds.
    pub reason: String,
}

impl Evaluation {
    fn holds() -> Self {
        Self { satisfied: true, reason: String::new() }
    }

    fn fails(reason: String) -> Self {
        Self { satisfied: false, reason }
    }
}

#[derive(Debug, Clone)]
enum Node {
    All(Vec<Node>),
    Any(Vec<Node>),
    Leaf(Box<Leaf>),
}

#[derive(Debug, Clone)]
struct Leaf {
    /// As written in the rule.
    fact: String,
    path: Vec<Segment>,
    operator: &'static str,
    check: Check,
    /// The rule's value quoted for reasons; `None` for a one-sided operator.
    shown: Option<String>,
}

/// One segment of a fact path: a key for objects, and its index for arrays when it is decimal.
#[derive(Debug, Clone)]
struct Segment {
    key: String,
    index: Option<usize>,
}

/// The test of a leaf, with its value parsed for the operator.
#[derive(Debug, Clone)]
enum Check {
    Equal(Value),
    NotEqual(Value),
    /// An ordering operator: holds when the fact compares with the value and the ordering is accepted.
    Compare(fn(Ordering) -> bool, Value),
    Between(Value, Value),
    Contains(Value),
    StartsWith(String),
    EndsWith(String),
    Matches(Regex),
    InSet(Vec<Value>),
    NotInSet(Vec<Value>),
    SizeEqual(u64),
    /// A one-sided operator, given the fact or `None` for nil.
    Is(fn(Option<&Value>) -> bool),
}

impl Condition {
    /// Parses and validates a rule document (see the module docs for the format), compiling its
    /// regexes.
    ///
    /// # Errors
    /// [`FieldError`] naming the offending sub-path under `field` (the path of the document in the
    /// chain, e.g. `relationships[2].conditions`): `…all[1].fact: required`,
    /// `…any[0].operator: unknown operator "equals" (…)`, `…all[0].value: invalid regex: …`, or the
    /// path of a group nested deeper than [`MAX_DEPTH`] or of the leaf past [`MAX_LEAVES`].
    pub fn parse(value: &Value, field: &str) -> Result<Self, FieldError> {
        let mut leaves = 0;
        let root = parse_node(value, field, 0, &mut leaves)?;
        Ok(Self { root })
    }

    /// Evaluates against the context `{"results": <parent result>, "args": <parent args>, "task":
    /// <parent task metadata>}`; a context that is not an object makes every fact nil.
    pub fn evaluate(&self, context: &Value) -> Evaluation {
        self.root.evaluate(context)
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") }
}

/// `depth` is the number of groups around `value`.
fn parse_node(value: &Value, path: &str, depth: usize, leaves: &mut usize) -> Result<Node, FieldError> {
    let Value::Object(object) = value else {
        return Err(FieldError::new(
            path,
            format!(
                "a rule must be an object ({{\"all\":[…]}}, {{\"any\":[…]}} or {{\"fact\",\"operator\",\"value\"}}), not {}",
                kind(value)
            ),
        ));
    };
    let group = match (object.get("all"), object.get("any")) {
        (Some(_), Some(_)) => return Err(FieldError::new(path, "a rule has either all or any, not both")),
        (Some(rules), None) => Some(("all", rules)),
        (None, Some(rules)) => Some(("any", rules)),
        (None, None) => None,
    };
    if let Some((name, rules)) = group {
        if object.contains_key("fact") {
            return Err(FieldError::new(path, format!("a rule is either a group ({name}) or a leaf (fact), not both")));
        }
        if let Some(key) = object.keys().find(|key| *key != name) {
            return Err(FieldError::new(join(path, key), format!("unknown key (a group has only {name})")));
        }
        return parse_group(name, rules, path, depth + 1, leaves);
    }
    if !LEAF_KEYS.iter().any(|key| object.contains_key(*key)) {
        return Err(FieldError::new(path, "a rule needs all, any or fact"));
    }
    if let Some(key) = object.keys().find(|key| !LEAF_KEYS.contains(&key.as_str())) {
        return Err(FieldError::new(join(path, key), "unknown key (a leaf has fact, operator and value)"));
    }
    *leaves += 1;
    if *leaves > MAX_LEAVES {
        return Err(FieldError::new(path, format!("a condition has at most {MAX_LEAVES} leaf rules")));
    }
    parse_leaf(object, path).map(|leaf| Node::Leaf(Box::new(leaf)))
}

/// `depth` is the group's own depth (the outermost group has depth 1).
fn parse_group(name: &str, rules: &Value, path: &str, depth: usize, leaves: &mut usize) -> Result<Node, FieldError> {
    if depth > MAX_DEPTH {
        return Err(FieldError::new(path, format!("groups nest deeper than {MAX_DEPTH} levels")));
    }
    let rules_path = join(path, name);
    let Value::Array(rules) = rules else {
        return Err(FieldError::new(rules_path, format!("must be an array of rules, not {}", kind(rules))));
    };
    if rules.is_empty() {
        return Err(FieldError::new(rules_path, "must hold at least one rule"));
    }
    let nodes = rules
        .iter()
        .enumerate()
        .map(|(i, rule)| parse_node(rule, &format!("{rules_path}[{i}]"), depth, leaves))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(if name == "all" { Node::All(nodes) } else { Node::Any(nodes) })
}

fn parse_leaf(object: &Map<String, Value>, path: &str) -> Result<Leaf, FieldError> {
    let fact_path = join(path, "fact");
    let fact = match object.get("fact") {
        None => return Err(FieldError::new(fact_path, "required")),
        Some(Value::String(fact)) => fact,
        Some(other) => {
            return Err(FieldError::new(
                fact_path,
                format!("must be a dotted path such as results.status, not {}", kind(other)),
            ));
        }
    };
    if fact.split('.').any(str::is_empty) {
        return Err(FieldError::new(
            fact_path,
            "must be dot-separated non-empty segments, such as results.items.0.name",
        ));
    }
    if !matches!(fact.split('.').next(), Some("results" | "args" | "task")) {
        return Err(FieldError::new(
            fact_path,
            format!(
                "{} must start with results, args or task (the context of a condition)",
                quote(&Value::String(fact.clone()))
            ),
        ));
    }
    let segments = fact
        .split('.')
        .map(|key| Segment {
            key: key.to_owned(),
            index: if key.bytes().all(|b| b.is_ascii_digit()) { key.parse().ok() } else { None },
        })
        .collect();
    let operator_path = join(path, "operator");
    let operator = match object.get("operator") {
        None => return Err(FieldError::new(operator_path, "required")),
        Some(Value::String(name)) => OPERATORS.iter().copied().find(|known| known == name).ok_or_else(|| {
            FieldError::new(
                &operator_path,
                format!(
                    "unknown operator {} (expected one of: {})",
                    quote(&Value::String(name.clone())),
                    OPERATORS.join(", ")
                ),
            )
        })?,
        Some(other) => return Err(FieldError::new(operator_path, format!("must be a string, not {}", kind(other)))),
    };
    let value = object.get("value");
    let check = parse_check(operator, value, &join(path, "value"))?;
    let shown = value.filter(|_| !ONE_SIDED_OPERATORS.contains(&operator)).map(quote);
    Ok(Leaf { fact: fact.clone(), path: segments, operator, check, shown })
}

fn parse_check(operator: &'static str, value: Option<&Value>, path: &str) -> Result<Check, FieldError> {
    let error = |reason: String| FieldError::new(path, reason);
    let one_sided: Option<fn(Option<&Value>) -> bool> = match operator {
        "nil" => Some(|fact| fact.is_none()),
        "not_nil" => Some(|fact| fact.is_some()),
        "is_true" => Some(|fact| fact == Some(&Value::Bool(true))),
        "is_false" => Some(|fact| fact == Some(&Value::Bool(false))),
        "is_string" => Some(|fact| fact.is_some_and(Value::is_string)),
        "is_array" => Some(|fact| fact.is_some_and(Value::is_array)),
        "is_integer" => Some(|fact| fact.and_then(Value::as_number).is_some_and(is_integer)),
        "empty" => Some(|fact| fact.is_none_or(|fact| size(fact) == Some(0))),
        "not_empty" => Some(|fact| fact.and_then(size).is_some_and(|size| size > 0)),
        _ => None,
    };
    if let Some(test) = one_sided {
        return match value {
            None | Some(Value::Null) => Ok(Check::Is(test)),
            Some(_) => Err(error(format!("{operator} takes no value (remove it or set it to null)"))),
        };
    }
    let value = match value {
        None => return Err(error("required".to_owned())),
        Some(Value::Null) => {
            return Err(error(format!(
                "must not be null: nil never satisfies {operator} (use nil or not_nil to test for nil)"
            )));
        }
        Some(value) => value,
    };
    let text = |what: &str| {
        value.as_str().map(str::to_owned).ok_or_else(|| error(format!("{operator} needs {what}, not {}", kind(value))))
    };
    if matches!(operator, "greater_than" | "less_than" | "greater_or_equal" | "less_or_equal")
        && !(value.is_number() || value.is_string())
    {
        return Err(error(format!("{operator} compares numbers or strings, not {}", kind(value))));
    }
    let set = || match value {
        Value::Array(items) => Ok(items.clone()),
        other => Err(error(format!("{operator} needs an array of values, not {}", kind(other)))),
    };
    Ok(match operator {
        "equal" => Check::Equal(value.clone()),
        "not_equal" => Check::NotEqual(value.clone()),
        "greater_than" => Check::Compare(Ordering::is_gt, value.clone()),
        "less_than" => Check::Compare(Ordering::is_lt, value.clone()),
        "greater_or_equal" => Check::Compare(Ordering::is_ge, value.clone()),
        "less_or_equal" => Check::Compare(Ordering::is_le, value.clone()),
        "between" => parse_between(value).map_err(error)?,
        "contains" => Check::Contains(value.clone()),
        "starts_with" => Check::StartsWith(text("a string")?),
        "ends_with" => Check::EndsWith(text("a string")?),
        "matches" => {
            let pattern = text("a regex string")?;
            let regex = RegexBuilder::new(&pattern)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| error(format!("invalid regex: {e}")))?;
            Check::Matches(regex)
        }
        "in_set" => Check::InSet(set()?),
        "not_in_set" => Check::NotInSet(set()?),
        "size_equal" => Check::SizeEqual(
            value
                .as_number()
                .and_then(as_size)
                .ok_or_else(|| error(format!("size_equal needs a non-negative integer, not {}", quote(value))))?,
        ),
        other => return Err(error(format!("no check for operator {other}"))),
    })
}

fn parse_between(value: &Value) -> Result<Check, String> {
    const SHAPE: &str = "between needs an array of two values [low, high], two numbers or two strings";
    let Value::Array(bounds) = value else { return Err(format!("{SHAPE}, not {}", kind(value))) };
    let [low, high] = bounds.as_slice() else { return Err(format!("{SHAPE}, not {} values", bounds.len())) };
    match compare(low, high) {
        None => Err(format!("{SHAPE}, not {} and {}", kind(low), kind(high))),
        Some(Ordering::Greater) => Err(format!("between needs low <= high, not {}", quote(value))),
        Some(_) => Ok(Check::Between(low.clone(), high.clone())),
    }
}

impl Node {
    fn evaluate(&self, context: &Value) -> Evaluation {
        match self {
            Node::All(rules) => {
                rules.iter().map(|rule| rule.evaluate(context)).find(|e| !e.satisfied).unwrap_or_else(Evaluation::holds)
            }
            Node::Any(rules) => {
                let mut first = None;
                for rule in rules {
                    let evaluation = rule.evaluate(context);
                    if evaluation.satisfied {
                        return evaluation;
                    }
                    first.get_or_insert(evaluation.reason);
                }
                let first = first.unwrap_or_default();
                Evaluation::fails(match rules.len() {
                    1 => format!("the only rule of any does not hold: {first}"),
                    n => format!("none of {n} rules of any holds: {first}"),
                })
            }
            Node::Leaf(leaf) => leaf.evaluate(context),
        }
    }
}

impl Leaf {
    fn evaluate(&self, context: &Value) -> Evaluation {
        let name = cut(&self.fact, true);
        let Some(fact) = resolve(context, &self.path) else {
            return match self.check {
                Check::Is(test) if test(None) => Evaluation::holds(),
                _ => Evaluation::fails(format!("{name} is nil")),
            };
        };
        if self.check.holds(fact) {
            return Evaluation::holds();
        }
        let mut reason = format!("{name} ({}) {}", quote(fact), self.operator);
        if let Some(shown) = &self.shown {
            reason.push(' ');
            reason.push_str(shown);
        }
        reason.push_str(" is false");
        if let Some(note) = self.check.mismatch(fact) {
            reason.push_str(": ");
            reason.push_str(&note);
        }
        Evaluation::fails(reason)
    }
}

impl Check {
    /// Whether a fact that is not nil satisfies the check.
    fn holds(&self, fact: &Value) -> bool {
        match self {
            Check::Equal(value) => json_eq(fact, value),
            Check::NotEqual(value) => !json_eq(fact, value),
            Check::Compare(accept, value) => compare(fact, value).is_some_and(*accept),
            Check::Between(low, high) => {
                compare(fact, low).is_some_and(Ordering::is_ge) && compare(fact, high).is_some_and(Ordering::is_le)
            }
            Check::Contains(value) => match (fact, value) {
                (Value::String(text), Value::String(part)) => text.contains(part.as_str()),
                (Value::Array(items), _) => items.iter().any(|item| json_eq(item, value)),
                (Value::Object(object), Value::String(key)) => object.contains_key(key),
                _ => false,
            },
            Check::StartsWith(prefix) => fact.as_str().is_some_and(|text| text.starts_with(prefix.as_str())),
            Check::EndsWith(suffix) => fact.as_str().is_some_and(|text| text.ends_with(suffix.as_str())),
            Check::Matches(regex) => fact.as_str().is_some_and(|text| regex.is_match(text)),
            Check::InSet(set) => set.iter().any(|value| json_eq(fact, value)),
            Check::NotInSet(set) => !set.iter().any(|value| json_eq(fact, value)),
            Check::SizeEqual(expected) => size(fact) == Some(*expected),
            Check::Is(test) => test(Some(fact)),
        }
    }

    /// Why a fact that is not nil cannot satisfy the check whatever its value, when its type is
    /// the cause.
    fn mismatch(&self, fact: &Value) -> Option<String> {
        let fact_kind = kind(fact);
        match self {
            Check::Equal(value) if kind(value) != fact_kind => {
                Some(format!("{fact_kind} never equals {}", kind(value)))
            }
            Check::Compare(_, value) | Check::Between(value, _) if compare(fact, value).is_none() => {
                Some(format!("{fact_kind} does not compare with {} (only two numbers or two strings do)", kind(value)))
            }
            Check::Contains(value) => match fact {
                Value::String(_) if !value.is_string() => Some("a string contains only strings".to_owned()),
                Value::Object(_) if !value.is_string() => Some("an object contains keys, which are strings".to_owned()),
                Value::String(_) | Value::Object(_) | Value::Array(_) => None,
                _ => Some(format!("contains needs a string, an array or an object, not {fact_kind}")),
            },
            Check::StartsWith(_) | Check::EndsWith(_) | Check::Matches(_) if !fact.is_string() => {
                Some(format!("the fact must be a string, not {fact_kind}"))
            }
            Check::SizeEqual(_) if size(fact).is_none() => {
                Some(format!("size_equal needs a string, an array or an object, not {fact_kind}"))
            }
            _ => None,
        }
    }
}
