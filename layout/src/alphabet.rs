//! The 95-character alphabet shared by TextDiffuser-2's character tokens and TextDiffuser's
//! character-segmentation classes: Python's `string.digits + ascii_lowercase + ascii_uppercase
//! + punctuation + ' '`, in that order (docs/architecture.md, "TextDiffuser-2's formats").

/// The alphabet in TextDiffuser's order; index `i` is token `[c]` id `51488 + i` and
/// segmentation class `i + 1`.
pub const ALPHABET: &str = concat!(
    "0123456789",
    "abcdefghijklmnopqrstuvwxyz",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
    " "
);

/// TextDiffuser character-segmentation class of `ch`: 1..=95 for the alphabet, `None` for any
/// other character (class 0 is the background).
pub fn char_class(ch: char) -> Option<u8> {
    ALPHABET.chars().position(|a| a == ch).map(|i| i as u8 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alphabet_has_95_distinct_characters() {
        let chars: Vec<char> = ALPHABET.chars().collect();
        assert_eq!(chars.len(), 95);
        let mut sorted = chars.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 95);
    }

    #[test]
    fn classes_follow_textdiffuser_order() {
        assert_eq!(char_class('0'), Some(1));
        assert_eq!(char_class('a'), Some(11));
        assert_eq!(char_class('A'), Some(37));
        assert_eq!(char_class('!'), Some(63));
        assert_eq!(char_class(' '), Some(95));
        assert_eq!(char_class('é'), None);
    }
}
