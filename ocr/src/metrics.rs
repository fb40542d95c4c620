//! MARIO-Eval's OCR metrics (TextDiffuser): words are lower-cased; per image,
//! precision = matched / predicted, recall = matched / expected, accuracy = 1 when the sorted
//! word lists are equal; precision, recall and accuracy are averaged over images and F is
//! computed from the averages. We add the normalised edit distance of the joined words.

use serde::Serialize;

/// Lower-cased words with surrounding punctuation removed (OCR often attaches quotes and
/// full stops that the intended text does not have).
pub fn normalize_words<S: AsRef<str>>(words: impl IntoIterator<Item = S>) -> Vec<String> {
    words
        .into_iter()
        .flat_map(|w| {
            w.as_ref()
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// Scores of one image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageScore {
    pub expected: Vec<String>,
    pub predicted: Vec<String>,
    pub matched: usize,
    pub precision: f64,
    pub recall: f64,
    pub accuracy: f64,
    /// Levenshtein distance between the sorted, space-joined word lists over the longer
    /// length: 0 identical, 1 nothing in common.
    pub normalized_edit_distance: f64,
}

/// Scores `predicted` OCR words against the `expected` words of one image.
pub fn score_image(expected: &[String], predicted: &[String]) -> ImageScore {
    let expected = normalize_words(expected);
    let predicted = normalize_words(predicted);
    let mut pool = predicted.clone();
    let mut matched = 0;
    for w in &expected {
        if let Some(i) = pool.iter().position(|p| p == w) {
            pool.swap_remove(i);
            matched += 1;
        }
    }
    let ratio = |n: usize, d: usize| if d == 0 { 0.0 } else { n as f64 / d as f64 };
    let (mut se, mut sp) = (expected.clone(), predicted.clone());
    se.sort();
    sp.sort();
    let (a, b) = (se.join(" "), sp.join(" "));
    let longest = a.chars().count().max(b.chars().count());
    ImageScore {
        matched,
        precision: ratio(matched, predicted.len()),
        recall: ratio(matched, expected.len()),
        accuracy: if se == sp { 1.0 } else { 0.0 },
        normalized_edit_distance: if longest == 0 {
            0.0
        } else {
            levenshtein(&a, &b) as f64 / longest as f64
        },
        expected,
        predicted,
    }
}

/// Averages over images.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub images: usize,
    pub precision: f64,
    pub recall: f64,
    /// F from the averaged precision and recall, as MARIO-Eval computes it.
    pub f: f64,
    /// MARIO-Eval's OCR accuracy: the share of images whose words all match.
    pub accuracy: f64,
    pub normalized_edit_distance: f64,
    /// Expected words found over all expected words, pooled over images.
    pub word_accuracy: f64,
}

pub fn summarize(scores: &[ImageScore]) -> Summary {
    let n = scores.len();
    let mean = |f: fn(&ImageScore) -> f64| {
        if n == 0 {
            0.0
        } else {
            scores.iter().map(f).sum::<f64>() / n as f64
        }
    };
    let (precision, recall) = (mean(|s| s.precision), mean(|s| s.recall));
    let expected: usize = scores.iter().map(|s| s.expected.len()).sum();
    let matched: usize = scores.iter().map(|s| s.matched).sum();
    Summary {
        images: n,
        precision,
        recall,
        f: if precision + recall == 0.0 {
            0.0
        } else {
            2.0 * precision * recall / (precision + recall)
        },
        accuracy: mean(|s| s.accuracy),
        normalized_edit_distance: mean(|s| s.normalized_edit_distance),
        word_accuracy: if expected == 0 {
            0.0
        } else {
            matched as f64 / expected as f64
        },
    }
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn mario_eval_definitions() {
        let a = score_image(&s(&["Summer", "Sale"]), &s(&["SALE", "summer"]));
        assert_eq!(
            (
                a.precision,
                a.recall,
                a.accuracy,
                a.normalized_edit_distance
            ),
            (1.0, 1.0, 1.0, 0.0)
        );
        let b = score_image(
            &s(&["big", "sale", "today"]),
            &s(&["big", "sa1e", "x", "y"]),
        );
        assert_eq!(
            (b.matched, b.precision, b.recall, b.accuracy),
            (1, 0.25, 1.0 / 3.0, 0.0)
        );
        let none = score_image(&s(&["word"]), &[]);
        assert_eq!((none.precision, none.recall), (0.0, 0.0));
        let sum = summarize(&[a, b]);
        assert_eq!(sum.precision, 0.625);
        assert!((sum.recall - 2.0 / 3.0).abs() < 1e-12);
        assert!((sum.f - 2.0 * 0.625 * (2.0 / 3.0) / (0.625 + 2.0 / 3.0)).abs() < 1e-12);
        assert_eq!(sum.accuracy, 0.5);
        assert!((sum.word_accuracy - 3.0 / 5.0).abs() < 1e-12);
    }

    #[test]
    fn duplicates_count_once_each() {
        let sc = score_image(&s(&["go", "go"]), &s(&["go"]));
        assert_eq!((sc.matched, sc.recall, sc.precision), (1, 0.5, 1.0));
    }

    #[test]
    fn edit_distance() {
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(normalize_words(["“Hello,", "World!"]), ["hello", "world"]);
    }
}
