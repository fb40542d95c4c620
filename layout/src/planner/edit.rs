//! Conversational edits of a layout ("make the title larger and move the date to the
//! bottom"): with an LLM, TextDiffuser-2's demo conversation (see [`LlmPlanner::edit`]);
//! without one, a small set of understood edits done deterministically (docs/llm-planner.md,
//! "Edits").

use super::{LlmPlanner, Plan, PlannerChoice, tidy};
use crate::{Align, BBox, Layout, LayoutError, TextMeasure};

/// One understood change.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Change {
    Scale(f32),
    Move(Side),
    Align(Align),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Top,
    Bottom,
    Left,
    Right,
}

/// Edits `layout` as `instruction` says, with the chosen planner: the LLM when there is one
/// (falling back to the understood edits when its answer is unusable, unless strict), else
/// the understood edits.
pub fn edit_layout(
    measure: &dyn TextMeasure,
    planner: &PlannerChoice,
    prompt: &str,
    layout: &Layout,
    instruction: &str,
    seed: u64,
) -> Result<Plan, LayoutError> {
    if layout.lines.is_empty() {
        return Err(unclear(instruction, "the layout has no lines to edit"));
    }
    check_canvas(layout)?;
    let PlannerChoice::Llm(config) = planner else {
        return edit_deterministic(measure, layout, instruction, seed);
    };
    match LlmPlanner::new(config.clone(), measure).edit(prompt, layout, instruction, seed) {
        Ok(plan) => Ok(plan),
        Err(e) if config.strict => Err(e),
        Err(e) => {
            let mut plan = edit_deterministic(measure, layout, instruction, seed)?;
            plan.warnings.insert(
                0,
                format!("LLM edit unusable ({e}); made the understood edits"),
            );
            Ok(plan)
        }
    }
}

/// The understood edits: larger/smaller, move to the top/bottom/left/right, align
/// left/center/right, each of one line (or all); the layout is then tidied with the edited
/// lines kept where the edit put them.
pub fn edit_deterministic(
    measure: &dyn TextMeasure,
    layout: &Layout,
    instruction: &str,
    seed: u64,
) -> Result<Plan, LayoutError> {
    check_canvas(layout)?;
    let clauses = clauses(instruction);
    if clauses.is_empty() {
        return Err(unclear(instruction, "it is empty"));
    }
    let mut edited = layout.clone();
    let (mut warnings, mut pinned) = (Vec::new(), Vec::new());
    // Boxes inside the canvas first, so the edits' arithmetic stays small.
    tidy::snap_inside(&mut edited, &mut warnings);
    for clause in clauses {
        let change = change(&clause)
            .ok_or_else(|| unclear(instruction, &format!("{clause:?} names no change")))?;
        for i in targets(&edited, &clause).map_err(|why| unclear(instruction, &why))? {
            let before = edited.lines[i].bbox;
            apply(&mut edited, i, change);
            warnings.push(format!(
                "{} {:?}: {:?} → {:?}",
                describe(change),
                edited.lines[i].text,
                [before.left, before.top, before.right, before.bottom],
                {
                    let b = edited.lines[i].bbox;
                    [b.left, b.top, b.right, b.bottom]
                }
            ));
            pinned.retain(|&p| p != i);
            pinned.push(i);
        }
    }
    warnings.extend(tidy::tidy_pinned(&mut edited, measure, None, &pinned)?);
    Ok(Plan {
        layout: edited,
        planner: "edit".into(),
        template: None,
        seed,
        font_px: Vec::new(),
        warnings,
    })
}

/// Largest canvas side an edit accepts: box arithmetic stays far from `i32`'s limits.
const MAX_EDIT_SIDE: u32 = 16384;

fn check_canvas(layout: &Layout) -> Result<(), LayoutError> {
    let side = 1..=MAX_EDIT_SIDE;
    if side.contains(&layout.width) && side.contains(&layout.height) {
        return Ok(());
    }
    Err(LayoutError::CanvasSize {
        width: layout.width,
        height: layout.height,
        min: 1,
        max: MAX_EDIT_SIDE,
    })
}

fn unclear(instruction: &str, reason: &str) -> LayoutError {
    LayoutError::UnclearEdit {
        instruction: instruction.to_string(),
        reason: reason.to_string(),
    }
}

/// The instruction split into single edits at "and", "then", commas, semicolons and full
/// stops (quoted text is never split).
fn clauses(instruction: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut quote: Option<char> = None;
    let mut previous = ' ';
    for c in instruction.chars() {
        let word_start = !previous.is_alphanumeric();
        previous = c;
        match (quote, c) {
            // An apostrophe inside a word ("title's") opens nothing.
            (None, '"' | '\'' | '“' | '‘') if word_start => quote = Some(c),
            (Some(_), '"' | '\'' | '”' | '’') => quote = None,
            (None, ',' | ';' | '.') => {
                parts.push(String::new());
                continue;
            }
            _ => {}
        }
        parts.last_mut().expect("never empty").push(c);
    }
    parts
        .iter()
        .flat_map(|p| {
            p.split(" and ")
                .flat_map(|q| q.split(" then "))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

fn words(clause: &str) -> Vec<String> {
    clause
        .to_lowercase()
        .split(|c: char| !c.is_alphanumeric() && c != '-')
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// The change a clause asks for, if it names one.
fn change(clause: &str) -> Option<Change> {
    let w = words(clause);
    let has = |list: &[&str]| w.iter().any(|x| list.contains(&x.as_str()));
    let side = |w: &str| match w {
        "left" | "left-align" | "left-aligned" => Some(Align::Left),
        "center" | "centre" | "centered" | "centred" | "middle" => Some(Align::Center),
        "right" | "right-align" | "right-aligned" => Some(Align::Right),
        _ => None,
    };
    if has(&[
        "align",
        "aligned",
        "left-align",
        "right-align",
        "center",
        "centre",
        "centered",
        "centred",
    ]) {
        return w.iter().rev().find_map(|x| side(x)).map(Change::Align);
    }
    if has(&[
        "larger", "bigger", "enlarge", "increase", "grow", "big", "large",
    ]) {
        return Some(Change::Scale(1.25));
    }
    if has(&["smaller", "shrink", "reduce", "decrease", "small", "tiny"]) {
        return Some(Change::Scale(0.8));
    }
    w.iter().rev().find_map(|x| match x.as_str() {
        "top" | "up" => Some(Change::Move(Side::Top)),
        "bottom" | "down" => Some(Change::Move(Side::Bottom)),
        "left" => Some(Change::Move(Side::Left)),
        "right" => Some(Change::Move(Side::Right)),
        _ => None,
    })
}

/// The lines a clause is about: quoted or named text, the title, the date, an ordinal line,
/// everything, or the only line.
fn targets(layout: &Layout, clause: &str) -> Result<Vec<usize>, String> {
    let lower = clause.to_lowercase();
    let squash = |s: &str| {
        s.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase()
    };
    let named: Vec<usize> = (0..layout.lines.len())
        .filter(|&i| lower.contains(&squash(&layout.lines[i].text)))
        .collect();
    if !named.is_empty() {
        return Ok(named);
    }
    let w = words(clause);
    let has = |list: &[&str]| w.iter().any(|x| list.contains(&x.as_str()));
    let n = layout.lines.len();
    if has(&["everything", "all", "layout", "lines"]) {
        return Ok((0..n).collect());
    }
    if has(&["title", "headline", "heading", "header", "name"]) {
        return Ok(vec![headline(layout)]);
    }
    if has(&["date", "day", "time", "when"]) {
        return (0..n)
            .find(|&i| looks_like_date(&layout.lines[i].text))
            .map(|i| vec![i])
            .ok_or_else(|| "no line looks like a date or time".to_string());
    }
    let ordinals = [
        "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth",
    ];
    if let Some(k) = ordinals.iter().position(|o| has(&[o])) {
        return (k < n)
            .then(|| vec![k])
            .ok_or_else(|| format!("the layout has {n} lines"));
    }
    if has(&["last"]) {
        return Ok(vec![n - 1]);
    }
    if n == 1 || has(&["text", "it"]) {
        return Ok((0..n).collect());
    }
    Err(format!("{clause:?} names no line of the layout"))
}

/// The tallest line (the first of equals): what a reader calls the title.
fn headline(layout: &Layout) -> usize {
    let mut best = 0;
    for (i, line) in layout.lines.iter().enumerate() {
        if line.bbox.height() > layout.lines[best].bbox.height() {
            best = i;
        }
    }
    best
}

fn looks_like_date(text: &str) -> bool {
    let lower = text.to_lowercase();
    let names = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec", "mon",
        "tue", "wed", "thu", "fri", "sat", "sun", "today", "tonight", "tomorrow", "weekend",
        "daily", "am", "pm",
    ];
    let tokens = words(&lower);
    lower.chars().any(|c| c.is_ascii_digit())
        || tokens
            .iter()
            .any(|t| names.iter().any(|n| t.starts_with(n)))
}

fn apply(layout: &mut Layout, i: usize, change: Change) {
    let (cw, ch) = (layout.width as i32, layout.height as i32);
    let margin = (0.04 * cw.min(ch) as f32).round() as i32;
    let line = &mut layout.lines[i];
    let b = line.bbox;
    line.bbox = match change {
        Change::Scale(f) => {
            let (w, h) = (
                (b.width() as f32 * f).round() as i32,
                (b.height() as f32 * f).round() as i32,
            );
            let (w, h) = (w.clamp(1, cw), h.clamp(1, ch));
            let (cx, cy) = ((b.left + b.right) / 2, (b.top + b.bottom) / 2);
            let (l, t) = ((cx - w / 2).clamp(0, cw - w), (cy - h / 2).clamp(0, ch - h));
            BBox::new(l, t, l + w, t + h)
        }
        Change::Move(Side::Top) => BBox::new(b.left, margin, b.right, margin + b.height()),
        Change::Move(Side::Bottom) => {
            BBox::new(b.left, ch - margin - b.height(), b.right, ch - margin)
        }
        Change::Move(Side::Left) => BBox::new(margin, b.top, margin + b.width(), b.bottom),
        Change::Move(Side::Right) => {
            BBox::new(cw - margin - b.width(), b.top, cw - margin, b.bottom)
        }
        Change::Align(a) => {
            line.align = Some(a);
            b
        }
    };
}

fn describe(change: Change) -> String {
    match change {
        Change::Scale(f) if f > 1.0 => "made larger".into(),
        Change::Scale(_) => "made smaller".into(),
        Change::Move(side) => format!("moved to the {}", format!("{side:?}").to_lowercase()),
        Change::Align(a) => format!("aligned {}", format!("{a:?}").to_lowercase()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TextLine;
    use crate::planner::fixed_measure::FixedMeasure;

    fn poster() -> Layout {
        Layout::new(
            512,
            512,
            vec![
                TextLine::new("Jazz Night", BBox::new(56, 40, 456, 140)),
                TextLine::new("Friday 9pm", BBox::new(156, 160, 356, 200)),
            ],
        )
    }

    #[test]
    fn title_larger_and_date_to_the_bottom() {
        let plan = edit_deterministic(
            &FixedMeasure,
            &poster(),
            "make the title larger and move the date to the bottom",
            1,
        )
        .unwrap();
        let l = &plan.layout;
        assert_eq!(l.lines[0].bbox.width(), 500, "{l:?}");
        assert_eq!(l.lines[1].bbox.bottom, 512 - 20, "{l:?}");
        assert!(tidy::is_tidy(l), "{l:?}");
        assert_eq!(plan.planner, "edit");
        assert!(
            plan.warnings[0].starts_with("made larger \"Jazz Night\""),
            "{:?}",
            plan.warnings
        );
    }

    #[test]
    fn named_lines_and_alignment() {
        let plan = edit_deterministic(
            &FixedMeasure,
            &poster(),
            "align 'friday 9pm' left; move everything up",
            1,
        )
        .unwrap();
        assert_eq!(plan.layout.lines[1].align, Some(Align::Left));
        assert_eq!(plan.layout.lines[0].bbox.top, 20);
    }

    #[test]
    fn wild_boxes_and_canvases_are_errors_or_fixed_never_panics() {
        let mut wild = poster();
        wild.lines[1].bbox = BBox::new(i32::MIN, i32::MIN, i32::MAX, i32::MAX);
        let plan = edit_deterministic(&FixedMeasure, &wild, "make everything larger", 1).unwrap();
        assert!(tidy::is_tidy(&plan.layout), "{:?}", plan.layout);
        let mut empty = poster();
        empty.width = 0;
        let err = edit_deterministic(&FixedMeasure, &empty, "make it larger", 1).unwrap_err();
        assert!(matches!(err, LayoutError::CanvasSize { .. }), "{err}");
    }

    #[test]
    fn unclear_instructions_say_what_is_understood() {
        for (instruction, reason) in [
            ("make it pop", "names no change"),
            ("make the logo larger", "names no line"),
            ("", "empty"),
        ] {
            let err = edit_deterministic(&FixedMeasure, &poster(), instruction, 1).unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, LayoutError::UnclearEdit { .. }), "{text}");
            assert!(
                text.contains(reason) && text.contains("Understood edits"),
                "{text}"
            );
        }
    }
}
