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
