//! A text measure for the planners' tests: every character is 0.6 em wide and 0.7 em tall, as
//! a rough sans, so tests need no font.

use crate::{InkExtent, TextMeasure};

pub(crate) struct FixedMeasure;

impl TextMeasure for FixedMeasure {
    fn ink_extent(
        &self,
        text: &str,
        _font: Option<&str>,
    ) -> Result<InkExtent, Box<dyn std::error::Error + Send + Sync>> {
        Ok(InkExtent {
            width: 0.6 * text.chars().count() as f32,
            height: 0.7,
        })
    }
}
