//! A GBNF grammar (llama.cpp's grammar format, `grammars/README.md` in llama.cpp) made per
//! request, so that a llama.cpp-family server can only answer TextDiffuser-2 text: every
//! keyword exactly once, in the given order, as `KEYWORD l,t,r,b\n` with integers 0..=128 and
//! right > left (docs/llm-planner.md, "The grammar").

use crate::GRID_SIZE;

/// The grammar for `keywords` (already unique, whitespace collapsed).
pub fn layout_grammar(keywords: &[String]) -> String {
    let mut g = String::from("root ::=");
    for i in 0..keywords.len() {
        g.push_str(&format!(" line{i}"));
    }
    g.push('\n');
    for (i, keyword) in keywords.iter().enumerate() {
        g.push_str(&format!(
            "line{i} ::= \"{} \" box \"\\n\"\n",
            escape(keyword)
        ));
    }
    g.push_str(&box_rules());
    g
}

/// `box ::= l "," n "," r "," n` where r > l: one alternative per left edge, each naming the
/// rule of the right edges it allows. Requiring bottom > top too would need a rule per
/// (left, top) pair (16k), so the parser's repair (swapping, dropping empty boxes) covers it.
fn box_rules() -> String {
    let mut rules = String::from("box ::= ");
    let alternatives: Vec<String> = (0..GRID_SIZE)
        .map(|l| format!("\"{l},\" n \",\" gt{l} \",\" n"))
        .collect();
    rules.push_str(&alternatives.join(" | "));
    rules.push('\n');
    rules.push_str(&format!("n ::= {}\n", int_range(0, GRID_SIZE)));
    for l in 0..GRID_SIZE {
        rules.push_str(&format!("gt{l} ::= {}\n", int_range(l + 1, GRID_SIZE)));
    }
    rules
}

/// GBNF alternatives matching the decimal integers `lo..=hi` without leading zeros.
pub fn int_range(lo: u32, hi: u32) -> String {
    let mut alternatives = Vec::new();
    let digits = |v: u32| v.to_string().len() as u32;
    for d in digits(lo)..=digits(hi) {
        let first = if d == 1 { 0 } else { 10u32.pow(d - 1) };
        let (a, b) = (lo.max(first), hi.min(10u32.pow(d) - 1));
        if a <= b {
            same_length(
                &a.to_string(),
                &b.to_string(),
                String::new(),
                &mut alternatives,
            );
        }
    }
    alternatives.join(" | ")
}

/// Appends to `out` the sequences matching every number from `a` to `b` (same length).
fn same_length(a: &str, b: &str, prefix: String, out: &mut Vec<String>) {
    let (Some(a0), Some(b0)) = (a.bytes().next(), b.bytes().next()) else {
        out.push(prefix.trim().to_string());
        return;
    };
    let (ra, rb) = (&a[1..], &b[1..]);
    let join = |p: &str, item: String| format!("{p} {item}");
    if a0 == b0 {
        return same_length(ra, rb, join(&prefix, digit(a0, a0)), out);
    }
    let low_full = ra.bytes().all(|c| c == b'0');
    let high_full = rb.bytes().all(|c| c == b'9');
    let (mid_lo, mid_hi) = (
        if low_full { a0 } else { a0 + 1 },
        if high_full { b0 } else { b0 - 1 },
    );
    if !low_full {
        same_length(ra, &"9".repeat(ra.len()), join(&prefix, digit(a0, a0)), out);
    }
    if mid_lo <= mid_hi {
        let any = " [0-9]".repeat(ra.len());
        out.push(
            format!("{}{any}", join(&prefix, digit(mid_lo, mid_hi)))
                .trim()
                .to_string(),
        );
    }
    if !high_full {
        same_length(&"0".repeat(rb.len()), rb, join(&prefix, digit(b0, b0)), out);
    }
}

fn digit(lo: u8, hi: u8) -> String {
    if lo == hi {
        format!("\"{}\"", lo as char)
    } else {
        format!("[{}-{}]", lo as char, hi as char)
    }
}

/// A GBNF string literal's body: quotes, backslashes and control characters escaped; other
/// characters (UTF-8 included) stand for themselves.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Whether `answer` looks like what the grammar allows (a truncated answer counts): a server
/// that ignores the `grammar` field (vLLM) answers something else, and the caller then asks
/// again in another mode.
pub fn obeys_grammar(answer: &str, keywords: &[String]) -> bool {
    let answer = answer.trim_start();
    let Some(first) = keywords.first() else {
        return true;
    };
    let head = format!("{first} ");
    if answer.len() < head.len() {
        return head.starts_with(answer);
    }
    answer.split('\n').zip(keywords).all(|(line, keyword)| {
        line.strip_prefix(keyword.as_str())
            .and_then(|rest| rest.strip_prefix(' '))
            .is_some_and(|coords| coords.chars().all(|c| c.is_ascii_digit() || c == ','))
            || (line.len() < keyword.len() + 1 && format!("{keyword} ").starts_with(line))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expands a GBNF alternative list of digit literals and classes, for checking.
    fn matches(alternatives: &str, s: &str) -> bool {
        alternatives.split(" | ").any(|alt| {
            let items: Vec<&str> = alt.split(' ').collect();
            items.len() == s.len()
                && items.iter().zip(s.bytes()).all(|(item, c)| {
                    let b = item.as_bytes();
                    if b[0] == b'"' {
                        b[1] == c
                    } else {
                        b[1] <= c && c <= b[3]
                    }
                })
        })
    }

    #[test]
    fn ranges_match_exactly_their_numbers() {
        for (lo, hi) in [
            (0, 128),
            (1, 128),
            (37, 128),
            (99, 128),
            (100, 128),
            (127, 128),
        ] {
            let alternatives = int_range(lo, hi);
            for v in 0..1000u32 {
                let inside = (lo..=hi).contains(&v);
                assert_eq!(
                    matches(&alternatives, &v.to_string()),
                    inside,
                    "{lo}..{hi}: {v}"
                );
            }
            assert!(!matches(&alternatives, "01"), "no leading zeros");
        }
        assert_eq!(
            int_range(0, 128),
            "[0-9] | [1-9] [0-9] | \"1\" [0-1] [0-9] | \"1\" \"2\" [0-8]"
        );
    }

    #[test]
    fn grammar_lists_each_keyword_once_in_order() {
        let g = layout_grammar(&["Fresh \"Coffee\"".into(), "open daily".into()]);
        assert!(g.starts_with("root ::= line0 line1\n"));
        assert!(g.contains("line0 ::= \"Fresh \\\"Coffee\\\" \" box \"\\n\"\n"));
        assert!(g.contains("\"127,\" n \",\" gt127 \",\" n"));
        assert!(g.contains("gt127 ::= \"1\" \"2\" \"8\"\n"));
    }

    #[test]
    fn answers_outside_the_grammar_are_noticed() {
        let k = vec!["SALE".to_string(), "today".to_string()];
        assert!(obeys_grammar("SALE 1,2,30,40\ntoday 1,50,30,60\n", &k));
        assert!(obeys_grammar("SALE 1,2,3", &k), "truncated");
        assert!(obeys_grammar("SA", &k));
        assert!(!obeys_grammar("Sure! Here is the layout", &k));
        assert!(!obeys_grammar("SALE: [1, 2, 30, 40]", &k));
    }
}
