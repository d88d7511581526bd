//! Pages of `ListTasks`: keyset paging by task id, newest first, and pages cut by size.
//!
//! A page holds at most `page_size` tasks and at most `limits.max_list_bytes` of task data, so that
//! listing tasks with large args or results never builds a response larger than a gRPC message (nor
//! holds more than that in memory): the store cuts the page by the JSON text of args, result and
//! error, and [`fitting`] cuts it again by the encoded size of each task. A page always holds at
//! least one task, so paging always moves on.
//!
//! A token is opaque to callers. It holds a format version and the id of the last task of the previous
//! page (`v1.<32 hex digits>`); the next page lists tasks with a smaller id. Any other text is refused,
//! so a token damaged in transit is an error rather than a silently different page.

use uuid::Uuid;

/// Prefix of version 1 tokens.
const PREFIX: &str = "v1.";

/// A page token that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed page token; pass next_page_token from a previous response unchanged")]
pub struct MalformedToken;

/// The token that continues after the task `last_id`.
pub fn encode(last_id: Uuid) -> String {
    format!("{PREFIX}{}", last_id.simple())
}

/// The id after which the next page starts; `None` for an empty token (the first page).
///
/// # Errors
/// [`MalformedToken`] for anything [`encode`] does not produce.
pub fn decode(token: &str) -> Result<Option<Uuid>, MalformedToken> {
    if token.is_empty() {
        return Ok(None);
    }
    let hex = token.strip_prefix(PREFIX).ok_or(MalformedToken)?;
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(MalformedToken);
    }
    Uuid::parse_str(hex).map(Some).map_err(|_| MalformedToken)
}

/// A token of a list paged by name (chains, schedules): `prefix` (the list's format, e.g. `c1.`) and the
/// last name of the previous page.
pub fn encode_name(prefix: &str, name: &str) -> String {
    format!("{prefix}{name}")
}

/// The name after which the next page of a list paged by name starts; `None` for an empty token (the
/// first page).
///
/// # Errors
/// [`MalformedToken`] for anything [`encode_name`] with `prefix` and a valid name does not produce.
pub fn decode_name(prefix: &str, token: &str) -> Result<Option<String>, MalformedToken> {
    if token.is_empty() {
        return Ok(None);
    }
    let name = token.strip_prefix(prefix).ok_or(MalformedToken)?;
    crate::policy::parse::validate_name("page_token", name).map_err(|_| MalformedToken)?;
    Ok(Some(name.to_owned()))
}

/// Checks `page_size` (1 to 1000; 0 means the default 100).
///
/// # Errors
/// The reason, for an `INVALID_ARGUMENT` on `page_size`.
pub fn page_size(requested: u32) -> Result<u32, String> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE),
        1..=MAX_PAGE_SIZE => Ok(requested),
        _ => Err(format!("must be 1 to {MAX_PAGE_SIZE}, got {requested}")),
    }
}

/// How many of the leading items, of encoded sizes `sizes` (bytes), fit in `budget` bytes: at least one
/// (if there is one), then as long as the running total stays within the budget.
pub fn fitting(sizes: impl IntoIterator<Item = usize>, budget: usize) -> usize {
    let mut total = 0_usize;
    let mut count = 0;
    for size in sizes {
        total = total.saturating_add(size);
        if count > 0 && total > budget {
            break;
        }
        count += 1;
    }
    count
}

/// Page size when none is given.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Largest page size.
pub const MAX_PAGE_SIZE: u32 = 1000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        let id = Uuid::now_v7();
        assert_eq!(decode(&encode(id)), Ok(Some(id)));
        assert_eq!(decode(""), Ok(None));
    }

    #[test]
    fn damaged_tokens_are_refused() {
        let good = encode(Uuid::now_v7());
        for bad in [
            "x".to_owned(),
            good[..good.len() - 1].to_owned(),
            format!("{good}0"),
            good.replace("v1.", "v2."),
            good.to_uppercase(),
            format!("v1.{}", Uuid::now_v7().hyphenated()),
            "v1.zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz".to_owned(),
        ] {
            assert_eq!(decode(&bad), Err(MalformedToken), "{bad}");
        }
    }

    #[test]
    fn pages_are_cut_by_size_but_hold_one_task() {
        assert_eq!(fitting([400, 400, 400], 1000), 2);
        assert_eq!(fitting([400, 600, 1], 1000), 2);
        assert_eq!(fitting([5000, 1], 1000), 1, "a task larger than the budget still gets a page");
        assert_eq!(fitting([1; 10], 1000), 10);
        assert_eq!(fitting([], 1000), 0);
        assert_eq!(fitting([usize::MAX, usize::MAX], 1000), 1);
    }

    #[test]
    fn page_sizes_are_bounded() {
        assert_eq!(page_size(0), Ok(100));
        assert_eq!(page_size(1), Ok(1));
        assert_eq!(page_size(1000), Ok(1000));
        assert!(page_size(1001).is_err());
    }
}
