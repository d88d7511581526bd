//! Text helpers shared by the processes.

/// `text` cut to at most `max` bytes at a character boundary, with `…` appended when cut: for quoting
/// caller input or long reasons in errors and logs without splitting a UTF-8 character.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// An error's message followed by its sources, joined with `": "` (each source once), so that the
/// cause of a `transport error` is visible.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    chain_from(error.to_string(), error.source())
}

/// A gRPC status's message followed by the chain of its sources (`tcp connect error: Connection
/// refused`), which tonic keeps out of the message for transport failures; as [`error_chain`].
pub fn status_chain(status: &tonic::Status) -> String {
    chain_from(status.message().to_owned(), std::error::Error::source(status))
}

/// `message` followed by `first` and its sources, joined with `": "`; empty texts and texts already
/// present are left out.
fn chain_from(mut message: String, first: Option<&(dyn std::error::Error + 'static)>) -> String {
    let mut source = first;
    while let Some(s) = source {
        let text = s.to_string();
        if !text.is_empty() && !message.contains(&text) {
            if !message.is_empty() {
                message.push_str(": ");
            }
            message.push_str(&text);
        }
        source = s.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_on_a_character_boundary() {
        assert_eq!(truncate("short", 8), "short");
        assert_eq!(truncate("abcdefghij", 4), "abcd…");
        assert_eq!(truncate("aéé", 2), "a…", "é is two bytes: cut before it");
        assert_eq!(truncate("", 0), "");
    }
}
