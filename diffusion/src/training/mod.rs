//! Training in tch: ControlNet training on a frozen base model and TextDiffuser-2-style UNet +
//! text-encoder fine-tuning, with the arithmetic of diffusers' training scripts (checked
//! against them by `tools/make_train_fixtures.py` and `tests/train_parity.rs`).

mod adamw;
mod batches;
mod checkpoints;
mod config;
mod ema;
mod finish;
mod init;
mod lr_schedule;
mod noise;
mod step;
mod trainer;

pub use adamw::{AdamW, AdamWConfig};
pub use batches::{TrainingData, TrainingSample};
pub use checkpoints::latest_checkpoint;
pub use config::{MixedPrecision, TrainConfig, TrainTarget, Validation};
pub use ema::Ema;
pub use init::{
    controlnet_config_json, controlnet_from_unet, named_variables, resize_token_embeddings,
    save_model_folder,
};
pub use lr_schedule::LrSchedule;
pub use noise::NoiseSchedule;
pub use step::{StepModels, TrainBatch, diffusion_loss, vae_loss};
pub use trainer::{NoTrainProgress, TrainProgress, TrainReport, train};
