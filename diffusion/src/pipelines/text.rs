//! Text conditioning: prompt → ids → CLIP hidden states, for both halves of classifier-free
//! guidance (diffusers `encode_prompt`; TextDiffuser-2's inference script for its ids).

use tch::{Kind, Tensor};

use super::model::StableDiffusion;
use super::request::{GenerationRequest, TextConditioning};
use crate::error::Result;

/// The ids the text encoder reads for the conditional half.
pub fn prompt_ids(model: &StableDiffusion, request: &GenerationRequest) -> Vec<i64> {
    match &request.conditioning {
        TextConditioning::Prompt => model.tokenizer.encode_padded(&request.prompt),
        TextConditioning::TextDiffuser2 { layout_tokens } => model
            .tokenizer
            .textdiffuser2_input_ids(&request.prompt, layout_tokens),
    }
}

/// The ids of the unconditional half: the negative prompt, or for TextDiffuser-2 with no
/// negative prompt its `[49407] * 77` (eos repeated; TextDiffuser-2's inference code).
pub fn negative_ids(model: &StableDiffusion, request: &GenerationRequest) -> Vec<i64> {
    match &request.conditioning {
        TextConditioning::TextDiffuser2 { .. } if request.negative_prompt.is_empty() => {
            vec![model.tokenizer.eos_id(); model.tokenizer.max_length()]
        }
        _ => model.tokenizer.encode_padded(&request.negative_prompt),
    }
}

/// `encoder_hidden_states` for the whole UNet batch, fp32: `[uncond × n, cond × n]` with
/// guidance (diffusers' order), else `[cond × n]`.
pub fn text_embeddings(
    model: &StableDiffusion,
    request: &GenerationRequest,
    guidance: bool,
) -> Result<Tensor> {
    let n = request.num_images as i64;
    let encode = |ids: Vec<i64>| -> Result<Tensor> {
        let ids = Tensor::from_slice(&ids)
            .unsqueeze(0)
            .to_device(model.device);
        let hidden = model
            .text_encoder
            .model
            .forward(&ids, request.clip_skip)?
            .to_kind(Kind::Float);
        Ok(hidden.repeat([n, 1, 1]))
    };
    let cond = encode(prompt_ids(model, request))?;
    if guidance {
        let uncond = encode(negative_ids(model, request))?;
        Ok(Tensor::cat(&[uncond, cond], 0))
    } else {
        Ok(cond)
    }
}
