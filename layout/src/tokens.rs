//! Per-line conditioning tokens for TextDiffuser-2's text encoder: `l{l} t{t} r{r} b{b}` on the
//! 0..128 grid, then one `[c]` token per character of the line (docs/architecture.md, "TextDiffuser-2's formats"). The diffusion
//! crate turns them into ids; it never sees layouts.

use crate::td2::grid_lines;
use crate::{ALPHABET, GridBox, Layout};

/// Tokens of one printed line: the box, then `[c]` for each character TextDiffuser-2 has a
/// token for (its 95-character alphabet); other characters have no token and are skipped.
///
/// ```
/// use letterpress_layout::{GridBox, line_tokens};
/// let t = line_tokens("Hi!", GridBox { l: 25, t: 89, r: 100, b: 120 });
/// assert_eq!(t, ["l25", "t89", "r100", "b120", "[H]", "[i]", "[!]"]);
/// ```
pub fn line_tokens(text: &str, grid: GridBox) -> Vec<String> {
    let mut tokens = vec![
        format!("l{}", grid.l),
        format!("t{}", grid.t),
        format!("r{}", grid.r),
        format!("b{}", grid.b),
    ];
    tokens.extend(
        text.chars()
            .filter(|c| ALPHABET.contains(*c))
            .map(|c| format!("[{c}]")),
    );
    tokens
}

/// Tokens for every printed line of `layout` (a line with `\n` gives one list per sub-line).
pub fn layout_tokens(layout: &Layout) -> Vec<Vec<String>> {
    grid_lines(layout)
        .iter()
        .map(|(text, g)| line_tokens(text, *g))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BBox, TextLine};

    #[test]
    fn spaces_have_a_token_and_unknown_characters_none() {
        let t = line_tokens(
            "a b·é",
            GridBox {
                l: 0,
                t: 1,
                r: 2,
                b: 3,
            },
        );
        assert_eq!(t, ["l0", "t1", "r2", "b3", "[a]", "[ ]", "[b]"]);
    }

    #[test]
    fn layouts_give_one_list_per_printed_line() {
        let layout = Layout::new(
            512,
            512,
            vec![TextLine::new("A\nB", BBox::new(0, 0, 512, 80))],
        );
        assert_eq!(
            layout_tokens(&layout),
            [
                ["l0", "t0", "r128", "b10", "[A]"],
                ["l0", "t10", "r128", "b20", "[B]"]
            ]
        );
    }
}
