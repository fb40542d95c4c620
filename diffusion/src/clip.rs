//! CLIPTextModel, ported from transformers `models/clip/modeling_clip.py` (CLIPTextEmbeddings,
//! CLIPAttention, CLIPMLP, CLIPEncoderLayer, CLIPTextTransformer). Stable Diffusion reads its
//! hidden states, not the pooled output, so only those are computed.

use serde::Deserialize;
use tch::{Kind, Tensor, nn};

use crate::error::{Error, Result, config_err};
use crate::layers::{Embedding, LayerNorm, Linear};
use crate::weights::FromPretrained;

/// The fields of a transformers `CLIPTextConfig` (`text_encoder/config.json`) that matter here.
#[derive(Debug, Clone, Deserialize)]
pub struct ClipTextConfig {
    /// Default 49408 (OpenAI CLIP); TextDiffuser-2 uses 51583.
    #[serde(default = "default_vocab")]
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_hidden_layers: usize,
    pub num_attention_heads: i64,
    /// Default 77.
    #[serde(default = "default_positions")]
    pub max_position_embeddings: i64,
    /// `quick_gelu` (OpenAI CLIP, SD 1.x) or `gelu` (OpenCLIP, SD 2.x). Default `quick_gelu`.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Default 1e-5.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
}

fn default_vocab() -> i64 {
    49408
}
fn default_positions() -> i64 {
    77
}
fn default_act() -> String {
    "quick_gelu".into()
}
fn default_eps() -> f64 {
    1e-5
}

impl ClipTextConfig {
    /// openai/clip-vit-large-patch14, the text encoder of SD 1.x
    /// (`stable-diffusion-v1-5/text_encoder/config.json`).
    pub fn sd15() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            max_position_embeddings: 77,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Activation {
    QuickGelu,
    Gelu,
}

#[derive(Debug)]
struct ClipAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: i64,
}

impl ClipAttention {
    fn new(p: nn::Path, c: &ClipTextConfig) -> Result<Self> {
        let d = c.hidden_size;
        Ok(Self {
            q_proj: Linear::new(&p / "q_proj", d, d, true)?,
            k_proj: Linear::new(&p / "k_proj", d, d, true)?,
            v_proj: Linear::new(&p / "v_proj", d, d, true)?,
            out_proj: Linear::new(&p / "out_proj", d, d, true)?,
            heads: c.num_attention_heads,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, n, d) = xs.size3()?;
        let split = |t: Tensor| {
            t.f_view([b, n, self.heads, d / self.heads])?
                .f_transpose(1, 2)
        };
        let q = split(self.q_proj.forward(xs)?)?;
        let k = split(self.k_proj.forward(xs)?)?;
        let v = split(self.v_proj.forward(xs)?)?;
        // The text transformer is causal: token i sees tokens 0..=i.
        let out = Tensor::f_scaled_dot_product_attention(
            &q,
            &k,
            &v,
            None::<Tensor>,
            0.0,
            true,
            None,
            false,
        )?;
        self.out_proj
            .forward(&out.f_transpose(1, 2)?.f_reshape([b, n, d])?)
    }
}

#[derive(Debug)]
struct ClipEncoderLayer {
    layer_norm1: LayerNorm,
    self_attn: ClipAttention,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    act: Activation,
}

impl ClipEncoderLayer {
    fn new(p: nn::Path, c: &ClipTextConfig, act: Activation) -> Result<Self> {
        let mlp = &p / "mlp";
        Ok(Self {
            layer_norm1: LayerNorm::new(&p / "layer_norm1", c.hidden_size, c.layer_norm_eps)?,
            self_attn: ClipAttention::new(&p / "self_attn", c)?,
            layer_norm2: LayerNorm::new(&p / "layer_norm2", c.hidden_size, c.layer_norm_eps)?,
            fc1: Linear::new(&mlp / "fc1", c.hidden_size, c.intermediate_size, true)?,
            fc2: Linear::new(&mlp / "fc2", c.intermediate_size, c.hidden_size, true)?,
            act,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = xs + self.self_attn.forward(&self.layer_norm1.forward(xs)?)?;
        let h = self.fc1.forward(&self.layer_norm2.forward(&xs)?)?;
        let h = match self.act {
            // transformers' QuickGELUActivation: x * sigmoid(1.702 x)
            Activation::QuickGelu => h.f_mul(&h.f_mul_scalar(1.702)?.f_sigmoid()?)?,
            Activation::Gelu => h.f_gelu("none")?,
        };
        Ok(xs + self.fc2.forward(&h)?)
    }
}

/// transformers' CLIPTextModel (the text tower of CLIP), as Stable Diffusion uses it.
#[derive(Debug)]
pub struct ClipTextModel {
    token_embedding: Embedding,
    position_embedding: Embedding,
    layers: Vec<ClipEncoderLayer>,
    final_layer_norm: LayerNorm,
    config: ClipTextConfig,
}

impl ClipTextModel {
    pub fn new(p: nn::Path, config: &ClipTextConfig) -> Result<Self> {
        let act = match config.hidden_act.as_str() {
            "quick_gelu" => Activation::QuickGelu,
            "gelu" => Activation::Gelu,
            other => {
                return Err(config_err(
                    "CLIPTextModel",
                    format!("hidden_act {other:?} (allowed: quick_gelu, gelu)"),
                ));
            }
        };
        if config.num_attention_heads <= 0 || config.hidden_size % config.num_attention_heads != 0 {
            return Err(config_err(
                "CLIPTextModel",
                format!(
                    "hidden_size {} is not a multiple of num_attention_heads {}",
                    config.hidden_size, config.num_attention_heads
                ),
            ));
        }
        let emb = &p / "embeddings";
        let enc = &p / "encoder" / "layers";
        let layers = (0..config.num_hidden_layers)
            .map(|i| ClipEncoderLayer::new(&enc / i, config, act))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            token_embedding: Embedding::new(
                &emb / "token_embedding",
                config.vocab_size,
                config.hidden_size,
            )?,
            position_embedding: Embedding::new(
                &emb / "position_embedding",
                config.max_position_embeddings,
                config.hidden_size,
            )?,
            layers,
            final_layer_norm: LayerNorm::new(
                &p / "final_layer_norm",
                config.hidden_size,
                config.layer_norm_eps,
            )?,
            config: config.clone(),
        })
    }

    pub fn config(&self) -> &ClipTextConfig {
        &self.config
    }

    /// Hidden states `[batch, tokens, hidden]` for `input_ids` `[batch, tokens]` (int64).
    ///
    /// `clip_skip` as diffusers' pipelines take it: 0 reads the last layer, 1 the penultimate
    /// (SD 2.x style), and so on; the final layer norm is applied in every case.
    pub fn forward(&self, input_ids: &Tensor, clip_skip: usize) -> Result<Tensor> {
        let (_, n) = input_ids.size2().map_err(|_| Error::Shape {
            what: "CLIPTextModel input_ids",
            message: format!("expected [batch, tokens], got {:?}", input_ids.size()),
        })?;
        if n > self.config.max_position_embeddings {
            return Err(Error::Shape {
                what: "CLIPTextModel input_ids",
                message: format!(
                    "{n} tokens, the model has {} positions",
                    self.config.max_position_embeddings
                ),
            });
        }
        if clip_skip >= self.layers.len() {
            return Err(Error::Shape {
                what: "CLIPTextModel clip_skip",
                message: format!(
                    "{clip_skip} skips but the model has {} layers",
                    self.layers.len()
                ),
            });
        }
        let ids = input_ids.f_to_kind(Kind::Int64)?;
        let (min, max) = (ids.f_min()?.int64_value(&[]), ids.f_max()?.int64_value(&[]));
        if min < 0 || max >= self.token_embedding.num {
            return Err(Error::Shape {
                what: "CLIPTextModel input_ids",
                message: format!(
                    "ids span {min}..={max}, the vocabulary has {} entries",
                    self.token_embedding.num
                ),
            });
        }
        let positions = Tensor::f_arange(n, (Kind::Int64, ids.device()))?.f_unsqueeze(0)?;
        let mut xs =
            self.token_embedding.forward(&ids)? + self.position_embedding.forward(&positions)?;
        for layer in &self.layers[..self.layers.len() - clip_skip] {
            xs = layer.forward(&xs)?;
        }
        self.final_layer_norm.forward(&xs)
    }
}

impl FromPretrained for ClipTextModel {
    type Config = ClipTextConfig;
    const WEIGHTS_STEM: &'static str = "model";

    fn build(p: nn::Path, config: &Self::Config) -> Result<Self> {
        Self::new(p, config)
    }

    /// transformers 4 saved every key under `text_model.` and sometimes the `position_ids`
    /// buffer; transformers 5 saves neither.
    fn rename_key(key: &str) -> Option<String> {
        let key = key.strip_prefix("text_model.").unwrap_or(key);
        (key != "embeddings.position_ids").then(|| key.to_string())
    }
}
