//! The dataset builder behind `letterpress dataset build`: images (a folder with sidecar
//! captions, a file list, or WebDataset shards) → a first stage on tesseract's layout analysis
//! that rejects what recognition could not make pass → OCR → MARIO-10M filters → WebDataset shards
//! with the original image, a JSON record (words, lines, characters, the TextDiffuser-2
//! layout string) and the glyph mask re-rendered from the OCR'd lines; per shard an index, an
//! error list and stats; optionally planner fine-tuning conversations. Killed at any moment,
//! a rerun completes it with every input exactly once (see `run`).

mod decode;
mod filters;
mod input;
mod photos;
mod reader;
mod rng;
mod run;
mod sample;
mod shard;
mod synth;

pub use decode::DecodeLimits;
pub use filters::{FILTER_NAMES, Filters};
pub use input::{InputKind, detect_kind};
pub use photos::{PHOTO_KINDS, textless_photo};
pub use reader::{ShardSample, read_samples, shard_paths};
pub use run::{
    BuildConfig, BuildPlan, BuildProgress, BuildReport, NoProgress, RUN_FILE, ShardBuild, build,
};
pub use shard::Stats;
pub use synth::{COLOURS, SynthConfig, SynthReport, synth};
