//! TextDiffuser-2's text formats (microsoft/unilm `textdiffuser-2`): the layout planner's
//! prompt, the vicuna v1.1 chat wrapper it was trained with, the `text l,t,r,b` answer format
//! on the 0..128 grid, and a parser for what real LLMs actually answer.

use std::sync::OnceLock;

use regex::Regex;

use crate::{GridBox, Layout, TextLine};

const PROMPT_HEAD: &str = "Given a prompt that will be used to generate an image, plan the layout of visual text for the image. The size of the image is 128x128. Therefore, all properties of the positions should not exceed 128, including the coordinates of top, left, right, and bottom.";
const PROMPT_TAIL: &str = "You dont need to specify the details of font styles. At each line, the format should be keyword left, top, right, bottom. So let us begin. Prompt: ";

/// The vicuna v1.1 system line TextDiffuser-2's planner was fine-tuned with.
pub const VICUNA_SYSTEM: &str = "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions.";

/// Longest text accepted for one parsed line, in characters (the renderer's limit).
const MAX_TEXT_CHARS: usize = 1000;

/// The planner prompt, verbatim as TextDiffuser-2 builds it (including "dont"). With
/// keywords, they are listed after the prompt as a Python list.
pub fn planner_prompt(prompt: &str, keywords: &[String]) -> String {
    if keywords.is_empty() {
        format!("{PROMPT_HEAD} All keywords are included in the caption. {PROMPT_TAIL}{prompt}")
    } else {
        let list: Vec<String> = keywords.iter().map(|k| python_str_repr(k)).collect();
        format!(
            "{PROMPT_HEAD} In addition, we also provide all keywords at random order for reference. {PROMPT_TAIL}{prompt}. Keywords: [{}]",
            list.join(", ")
        )
    }
}

/// `msg` in the vicuna v1.1 template, for completion endpoints serving base models.
pub fn vicuna_wrap(msg: &str) -> String {
    format!("{VICUNA_SYSTEM} USER: {msg} ASSISTANT:")
}

/// Python's `repr()` of a string, as `str(list)` writes each element.
fn python_str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// A layout's lines on the grid, one entry per printed line: text with `\n` becomes several
/// entries whose boxes split the line's box into equal horizontal bands.
pub fn grid_lines(layout: &Layout) -> Vec<(String, GridBox)> {
    let mut out = Vec::new();
    for line in &layout.lines {
        let g = line.bbox.to_grid(layout.width, layout.height);
        let subs: Vec<&str> = line.text.split('\n').collect();
        let n = subs.len() as u32;
        let height = g.b.saturating_sub(g.t);
        for (i, sub) in subs.iter().enumerate() {
            let i = i as u32;
            let (t, b) = if n > 1 && height >= n {
                (g.t + height * i / n, g.t + height * (i + 1) / n)
            } else {
                (g.t, g.b)
            };
            out.push((sub.trim().to_string(), GridBox { t, b, ..g }));
        }
    }
    out
}

/// The layout as TextDiffuser-2's planner writes it: one `text l,t,r,b` line per text line.
pub fn serialize(layout: &Layout) -> String {
    grid_lines(layout)
        .iter()
        .map(|(text, g)| format!("{text} {},{},{},{}", g.l, g.t, g.r, g.b))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One line recovered from a planner's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedLine {
    pub text: String,
    pub grid: GridBox,
}

/// What [`parse`] recovered, and what it had to fix or drop.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    pub lines: Vec<ParsedLine>,
    pub warnings: Vec<String>,
}

impl Parsed {
    /// The parsed lines as a layout on a `width`×`height` canvas.
    pub fn to_layout(&self, width: u32, height: u32) -> Layout {
        let lines = self
            .lines
            .iter()
            .map(|l| TextLine::new(l.text.clone(), l.grid.to_pixels(width, height)))
            .collect();
        Layout::new(width, height, lines)
    }

    /// Keywords that no parsed line carries, in their given order.
    pub fn missing_keywords(&self, keywords: &[String]) -> Vec<String> {
        keywords
            .iter()
            .filter(|k| !self.lines.iter().any(|l| &l.text == *k))
            .cloned()
            .collect()
    }
}

fn coordinate_line() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        let num = r"(-?\d{1,12}(?:\.\d*)?)";
        let sep = r"(?:\s*[,;]\s*|\s+)";
        Regex::new(&format!(
            r"^(?P<text>.*?)[\s:=]*[\[({{<]?\s*{num}{sep}{num}{sep}{num}{sep}{num}\s*[\])}}>]?[\s.,;:!]*$"
        ))
        .expect("static regex")
    })
}

fn list_marker() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"^(?:[-*•·+>]+|\d{1,2}[.)]|\(\d{1,2}\))\s+").expect("static regex")
    })
}

/// Parses a planner's answer. The reference parser splits on newlines, skips empty lines and
/// lines containing `###` or `.com`, and takes the last token as coordinates; this one also
/// copes with what real LLMs emit: CRLF, code fences, bullets and numbering, chatter lines,
/// `l, t, r, b` with extra or missing spaces, brackets, trailing punctuation, out-of-range
/// coordinates (clamped to 0..=128), swapped corners, zero-area boxes (dropped), duplicates,
/// and — when `keywords` are given — text that is not one of them (dropped; case-insensitive
/// matches take the keyword's spelling). It never panics.
pub fn parse(answer: &str, keywords: &[String]) -> Parsed {
    let mut parsed = Parsed::default();
    let mut chatter = 0usize;
    for raw in answer.lines() {
        let line = raw.trim();
        if line.is_empty()
            || line.starts_with("```")
            || line.contains("###")
            || line.contains(".com")
        {
            continue;
        }
        let line = list_marker().replace(line, "");
        let Some(caps) = coordinate_line().captures(&line) else {
            chatter += 1;
            continue;
        };
        let text = clean_text(&caps["text"]);
        let coords: Vec<u32> = (2..=5).map(|i| grid_value(&caps[i])).collect();
        let (mut l, mut t, mut r, mut b) = (coords[0], coords[1], coords[2], coords[3]);
        if text.is_empty() {
            chatter += 1;
            continue;
        }
        if text.chars().count() > MAX_TEXT_CHARS {
            parsed.warnings.push(format!(
                "dropped a line of over {MAX_TEXT_CHARS} characters"
            ));
            continue;
        }
        if l > r {
            std::mem::swap(&mut l, &mut r);
        }
        if t > b {
            std::mem::swap(&mut t, &mut b);
        }
        if l == r || t == b {
            parsed.warnings.push(format!(
                "dropped {text:?}: its box {l},{t},{r},{b} has no area"
            ));
            continue;
        }
        let text = if keywords.is_empty() {
            text
        } else if let Some(k) = keywords
            .iter()
            .find(|k| **k == text || k.to_lowercase() == text.to_lowercase())
        {
            k.clone()
        } else {
            parsed
                .warnings
                .push(format!("dropped {text:?}: not one of the keywords"));
            continue;
        };
        let grid = GridBox { l, t, r, b };
        let duplicate = parsed
            .lines
            .iter()
            .any(|p| p.text == text && (p.grid == grid || !keywords.is_empty()));
        if duplicate {
            parsed
                .warnings
                .push(format!("dropped a duplicate of {text:?}"));
            continue;
        }
        parsed.lines.push(ParsedLine { text, grid });
    }
    if chatter > 0 {
        parsed.warnings.push(format!(
            "ignored {chatter} line(s) without a text and four coordinates"
        ));
    }
    parsed
}

/// A coordinate rounded and clamped to the grid; anything unparsable counts as 0.
fn grid_value(s: &str) -> u32 {
    let v: f64 = s.parse().unwrap_or(0.0);
    v.round().clamp(0.0, f64::from(crate::GRID_SIZE)) as u32
}

/// Strips quotes, markdown emphasis and trailing separators an LLM wraps the text in.
fn clean_text(text: &str) -> String {
    let t = text
        .trim()
        .trim_end_matches([':', '=', '-', '–', '—', ','])
        .trim();
    let t = t.trim_matches(|c| matches!(c, '*' | '`' | '_')).trim();
    let quoted =
        |open: char, close: char| t.len() >= 2 && t.starts_with(open) && t.ends_with(close);
    let t = if quoted('"', '"') || quoted('\'', '\'') || quoted('“', '”') || quoted('‘', '’')
    {
        let mut c = t.chars();
        c.next();
        c.next_back();
        c.as_str().trim()
    } else {
        t
    };
    t.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BBox;

    #[test]
    fn prompts_are_verbatim() {
        let p = planner_prompt("a poster of a cat", &[]);
        assert!(p.starts_with("Given a prompt that will be used to generate an image, plan the layout of visual text for the image. The size of the image is 128x128."));
        assert!(p.contains("bottom. All keywords are included in the caption. You dont need"));
        assert!(p.ends_with("So let us begin. Prompt: a poster of a cat"));
        let p = planner_prompt("a logo", &["KFC".into(), "VIVO50".into()]);
        assert!(p.contains("bottom. In addition, we also provide all keywords at random order for reference. You dont need"));
        assert!(p.ends_with("Prompt: a logo. Keywords: ['KFC', 'VIVO50']"));
        assert_eq!(python_str_repr("Joe's"), "\"Joe's\"");
        assert_eq!(python_str_repr(r#"a"b'c\"#), r#"'a"b\'c\\'"#);
        assert_eq!(
            vicuna_wrap("hi"),
            "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions. USER: hi ASSISTANT:"
        );
    }

    #[test]
    fn serializes_on_the_grid() {
        let layout = Layout::new(
            512,
            512,
            vec![
                TextLine::new("Summer Vibe", BBox::new(80, 80, 400, 160)),
                TextLine::new("two\nlines", BBox::new(0, 200, 512, 280)),
            ],
        );
        assert_eq!(
            serialize(&layout),
            "Summer Vibe 20,20,100,40\ntwo 0,50,128,60\nlines 0,60,128,70"
        );
    }

    fn kw(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_the_reference_format() {
        let p = parse("Summer Vibe 20,20,100,40\nSALE 30,60,90,80", &[]);
        assert_eq!(
            p.lines[0],
            ParsedLine {
                text: "Summer Vibe".into(),
                grid: GridBox {
                    l: 20,
                    t: 20,
                    r: 100,
                    b: 40
                }
            }
        );
        assert_eq!(p.lines[1].text, "SALE");
        assert!(p.warnings.is_empty());
    }

    #[test]
    fn copes_with_what_llms_emit() {
        let answer = "Sure! Here is the layout:\r\n```text\r\n1. Summer Vibe 20, 20, 100, 40.\r\n- \"SALE\": [30,60,90,80]\r\n* **Today** 10 90 50 100\r\n(2) VIVO50 140,-5,100,300;\r\n```\r\nHope this helps!";
        let p = parse(answer, &[]);
        let got: Vec<(&str, [u32; 4])> = p
            .lines
            .iter()
            .map(|l| (l.text.as_str(), [l.grid.l, l.grid.t, l.grid.r, l.grid.b]))
            .collect();
        assert_eq!(
            got,
            [
                ("Summer Vibe", [20, 20, 100, 40]),
                ("SALE", [30, 60, 90, 80]),
                ("Today", [10, 90, 50, 100]),
                ("VIVO50", [100, 0, 128, 128]),
            ]
        );
        assert!(
            p.warnings.iter().any(|w| w.contains("ignored 2 line")),
            "{:?}",
            p.warnings
        );
    }

    #[test]
    fn drops_bad_lines_with_warnings() {
        let keywords = kw(&["KFC", "Open Late"]);
        let answer = "KFC 10,10,50,30\nopen late 10,40,10,60\nOpen Late 10,40,90,60\nKFC 10,70,50,90\nPizza 0,0,20,20\nwww.kfc.com 1,1,2,2\n### 1,1,2,2";
        let p = parse(answer, &keywords);
        assert_eq!(
            p.lines.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(),
            ["KFC", "Open Late"]
        );
        let w = p.warnings.join("\n");
        assert!(
            w.contains("no area")
                && w.contains("duplicate")
                && w.contains("not one of the keywords"),
            "{w}"
        );
        assert!(p.missing_keywords(&keywords).is_empty());
        assert_eq!(
            parse("KFC 1,1,5,5", &keywords).missing_keywords(&keywords),
            ["Open Late"]
        );
    }

    #[test]
    fn case_insensitive_keyword_takes_keyword_spelling() {
        let p = parse("kfc 10,10,50,30", &kw(&["KFC"]));
        assert_eq!(p.lines[0].text, "KFC");
    }

    #[test]
    fn text_ending_in_digits_keeps_them() {
        let p = parse("Route 66 10 10 50 50\nVIVO50 20,20,100,40", &[]);
        assert_eq!(p.lines[0].text, "Route 66");
        assert_eq!(p.lines[1].text, "VIVO50");
    }

    #[test]
    fn garbage_never_panics() {
        for s in [
            "",
            "\n\n",
            "1,2,3,4",
            "é 1,2,3,4",
            "x 1e99,2,3,4",
            "x 99999999999,0,1,1",
            "「」 1,2,3,4 ,",
            "\u{0}",
        ] {
            let _ = parse(s, &kw(&["é"]));
        }
    }

    mod identity {
        use super::*;
        use proptest::prelude::*;

        fn grid_line() -> impl Strategy<Value = (String, GridBox)> {
            let text = "[A-Za-z0-9][A-Za-z0-9 !?&%'#@+]{0,24}[A-Za-z0-9!?%]|[A-Za-z0-9]";
            (text, 0u32..128, 0u32..128, 1u32..=128, 1u32..=128).prop_map(|(t, l, top, w, h)| {
                let text = t.split_whitespace().collect::<Vec<_>>().join(" ");
                let (r, b) = ((l + w).min(128), (top + h).min(128));
                (
                    text,
                    GridBox {
                        l,
                        t: top,
                        r: r.max(l + 1),
                        b: b.max(top + 1),
                    },
                )
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// serialize → parse is the identity on the grid.
            #[test]
            fn serialize_then_parse_is_identity(mut lines in proptest::collection::vec(grid_line(), 0..10)) {
                lines.dedup();
                lines.retain(|(t, _)| !t.contains("###"));
                let mut unique: Vec<(String, GridBox)> = Vec::new();
                for l in lines {
                    if !unique.contains(&l) { unique.push(l); }
                }
                let layout = Layout::new(512, 512, unique.iter().map(|(t, g)| TextLine::new(t.clone(), g.to_pixels(512, 512))).collect());
                let parsed = parse(&serialize(&layout), &[]);
                let got: Vec<(String, GridBox)> = parsed.lines.into_iter().map(|l| (l.text, l.grid)).collect();
                prop_assert_eq!(got, unique);
                prop_assert!(parsed.warnings.is_empty());
            }
        }
    }
}
