//! Keywords: the text a poster must show, taken from quotes in the prompt or given explicitly.

/// Opening quote → closing quote. Straight and curly single quotes double as apostrophes, so
/// they only count at word edges (see [`extract_keywords`]).
const QUOTE_PAIRS: &[(char, char)] = &[
    ('"', '"'),
    ('\'', '\''),
    ('\u{201C}', '\u{201D}'), // “ ”
    ('\u{2018}', '\u{2019}'), // ‘ ’
    ('\u{300C}', '\u{300D}'), // 「 」
    ('\u{300E}', '\u{300F}'), // 『 』
    ('\u{00AB}', '\u{00BB}'), // « »
    ('\u{201E}', '\u{201C}'), // „ “
];

/// Whether `c` puts ink on the page: not a control, space, zero-width/format (joiners,
/// direction marks, the BOM, variation selectors, tags) or private-use character. Fonts draw
/// those as nothing or as a missing-glyph box, so a keyword made only of them has no text.
pub fn is_visible(c: char) -> bool {
    let format = matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}'
        | '\u{FFA0}' | '\u{FFF0}'..='\u{FFFB}' | '\u{E0000}'..='\u{E0FFF}');
    let private_use = matches!(c,
        '\u{E000}'..='\u{F8FF}' | '\u{F0000}'..='\u{FFFFD}' | '\u{100000}'..='\u{10FFFD}');
    !(c.is_control() || c.is_whitespace() || format || private_use)
}

fn is_apostrophe_like(c: char) -> bool {
    matches!(c, '\'' | '\u{2018}' | '\u{2019}')
}

/// Text in quotes in `prompt`, in order, duplicates removed: `'…'`, `"…"`, `‘…’`, `“…”`,
/// `「…」`, `『…』`, `«…»`, `„…“`. Apostrophes inside words (`don't`, `Joe's`, `rock ’n’ roll`
/// contractions) are not quotes: a single quote opens only where a word starts and closes
/// only where a word ends.
///
/// ```
/// use letterpress_layout::extract_keywords;
/// let k = extract_keywords("a poster for Joe's diner that says 'Open Late' and “Best Burgers”");
/// assert_eq!(k, ["Open Late", "Best Burgers"]);
/// ```
pub fn extract_keywords(prompt: &str) -> Vec<String> {
    let chars: Vec<char> = prompt.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let Some(&(_, close)) = QUOTE_PAIRS.iter().find(|(open, _)| *open == c) else {
            i += 1;
            continue;
        };
        let before = i.checked_sub(1).map(|j| chars[j]);
        if is_apostrophe_like(c) && before.is_some_and(char::is_alphanumeric) {
            i += 1; // don't, Joe's
            continue;
        }
        let closing = (i + 1..chars.len()).find(|&j| {
            chars[j] == close
                && (!is_apostrophe_like(close)
                    || chars.get(j + 1).is_none_or(|n| !n.is_alphanumeric()))
        });
        match closing {
            Some(j) => {
                let inner: String = chars[i + 1..j].iter().collect();
                push_unique(&mut found, &inner);
                i = j + 1;
            }
            None => i += 1,
        }
    }
    found
}

/// Explicit keywords as TextDiffuser-2's demo takes them: `/`-separated (`"KFC/VIVO50"`),
/// trimmed, empty entries and duplicates removed, order kept.
pub fn parse_keyword_list(list: &str) -> Vec<String> {
    normalize_keywords(list.split('/'))
}

/// Trims, drops empties and duplicates, keeps order.
pub fn normalize_keywords<S: AsRef<str>>(keywords: impl IntoIterator<Item = S>) -> Vec<String> {
    let mut out = Vec::new();
    for k in keywords {
        push_unique(&mut out, k.as_ref());
    }
    out
}

fn push_unique(list: &mut Vec<String>, keyword: &str) {
    let k = keyword.split_whitespace().collect::<Vec<_>>().join(" ");
    if !k.is_empty() && !list.contains(&k) {
        list.push(k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_of_every_kind() {
        let p = r#"poster with "Grand Opening", 'sale', ‘cafe’, “tea”, 「夏日」, 『祭り』, «Paris» and „Berlin“"#;
        assert_eq!(
            extract_keywords(p),
            [
                "Grand Opening",
                "sale",
                "cafe",
                "tea",
                "夏日",
                "祭り",
                "Paris",
                "Berlin"
            ]
        );
    }

    #[test]
    fn apostrophes_inside_words_are_left_alone() {
        assert_eq!(
            extract_keywords("Joe's bar, don't miss 'Happy Hour'"),
            ["Happy Hour"]
        );
        assert_eq!(
            extract_keywords("it's the kids' party called 'Fun Day'"),
            ["Fun Day"]
        );
        assert_eq!(
            extract_keywords("Joe’s café says ‘Bon Appétit’ and we’re in"),
            ["Bon Appétit"]
        );
        assert!(extract_keywords("no quotes at all, isn't it").is_empty());
    }

    #[test]
    fn duplicates_removed_order_kept_and_unclosed_quotes_ignored() {
        assert_eq!(
            extract_keywords(r#""B" "A" "B" "  A " "unclosed"#),
            ["B", "A"]
        );
        assert_eq!(extract_keywords(r#""" '' "x""#), ["x"]);
    }

    #[test]
    fn explicit_lists() {
        assert_eq!(parse_keyword_list("KFC/VIVO50/ KFC /"), ["KFC", "VIVO50"]);
        assert_eq!(normalize_keywords(["a  b", "a b", ""]), ["a b"]);
    }
}
