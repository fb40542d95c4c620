//! Job and file ids: a prefix and 32 random hex digits. Anything else in a path is simply not
//! found, so ids can never name a file outside the store.

pub const JOB_PREFIX: &str = "gen_";
pub const FILE_PREFIX: &str = "file_";

pub fn new_id(prefix: &str) -> String {
    format!("{prefix}{:032x}", rand::random::<u128>())
}

/// True for ids this service could have made.
pub fn is_valid(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix).is_some_and(|hex| {
        hex.len() == 32 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_own_ids_are_valid() {
        let id = new_id(FILE_PREFIX);
        assert!(is_valid(&id, FILE_PREFIX));
        assert!(!is_valid(&id, JOB_PREFIX));
        for bad in [
            "file_../../etc/passwd",
            "file_",
            "../letterpress.sqlite3",
            "file_0123456789abcdef0123456789ABCDEF",
        ] {
            assert!(!is_valid(bad, FILE_PREFIX), "{bad}");
        }
    }
}
