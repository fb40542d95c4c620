//! diffusers' `Attention` (models/attention_processor.py, AttnProcessor2_0), `FeedForward` with
//! GEGLU, `BasicTransformerBlock` (models/attention.py) and `Transformer2DModel`
//! (models/transformers/transformer_2d.py, continuous input), as SD 1.x/2.x use them.

use tch::{Kind, Tensor, nn};

use crate::error::Result;
use crate::layers::{Conv2d, GroupNorm, LayerNorm, Linear};

/// diffusers `Attention`: multi-head self- or cross-attention through
/// `scaled_dot_product_attention`.
#[derive(Debug)]
pub(crate) struct Attention {
    group_norm: Option<GroupNorm>,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: i64,
    /// `upcast_attention` (SD 2.1): attention in fp32 when the weights are half precision.
    upcast: bool,
    /// The VAE's attention adds its input back (`residual_connection=True`).
    residual_connection: bool,
}

impl Attention {
    /// Transformer attention: bias-free q/k/v, `cross_attention_dim` for keys and values.
    pub(crate) fn new(
        p: nn::Path,
        query_dim: i64,
        cross_attention_dim: Option<i64>,
        heads: i64,
        dim_head: i64,
        upcast: bool,
    ) -> Result<Self> {
        let inner = heads * dim_head;
        let kv_dim = cross_attention_dim.unwrap_or(query_dim);
        Ok(Self {
            group_norm: None,
            to_q: Linear::new(&p / "to_q", query_dim, inner, false)?,
            to_k: Linear::new(&p / "to_k", kv_dim, inner, false)?,
            to_v: Linear::new(&p / "to_v", kv_dim, inner, false)?,
            to_out: Linear::new(&p / "to_out" / 0, inner, query_dim, true)?,
            heads,
            upcast,
            residual_connection: false,
        })
    }

    /// The VAE mid-block attention (diffusers `UNetMidBlock2D` with `attention_head_dim` equal
    /// to the channels, so one head): group norm first, biased projections, residual added.
    pub(crate) fn new_spatial(
        p: nn::Path,
        channels: i64,
        heads: i64,
        groups: i64,
        eps: f64,
    ) -> Result<Self> {
        Ok(Self {
            group_norm: Some(GroupNorm::new(&p / "group_norm", groups, channels, eps)?),
            to_q: Linear::new(&p / "to_q", channels, channels, true)?,
            to_k: Linear::new(&p / "to_k", channels, channels, true)?,
            to_v: Linear::new(&p / "to_v", channels, channels, true)?,
            to_out: Linear::new(&p / "to_out" / 0, channels, channels, true)?,
            heads,
            upcast: false,
            residual_connection: true,
        })
    }

    /// `xs` `[batch, tokens, dim]` (or `[batch, channels, h, w]` for the spatial form);
    /// `context` `[batch, tokens', cross_dim]` for cross-attention.
    pub(crate) fn forward(&self, xs: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let spatial = xs.dim() == 4;
        let (b, c, h, w) = if spatial { xs.size4()? } else { (0, 0, 0, 0) };
        let mut hs = if spatial {
            xs.f_view([b, c, h * w])?.f_transpose(1, 2)?
        } else {
            xs.shallow_clone()
        };
        if let Some(norm) = &self.group_norm {
            hs = norm.forward(&hs.f_transpose(1, 2)?)?.f_transpose(1, 2)?;
        }
        let batch = hs.size()[0];
        let q = self.to_q.forward(&hs)?;
        let context = context.unwrap_or(&hs);
        let k = self.to_k.forward(context)?;
        let v = self.to_v.forward(context)?;
        let inner = k.size()[2];
        let dim_head = inner / self.heads;
        let split = |t: &Tensor| {
            t.f_view([batch, -1, self.heads, dim_head])?
                .f_transpose(1, 2)
        };
        let (q, k, v) = (split(&q)?, split(&k)?, split(&v)?);
        let kind = q.kind();
        let out = if self.upcast && kind != Kind::Float && kind != Kind::Double {
            let f = |t: &Tensor| t.f_to_kind(Kind::Float);
            Tensor::f_scaled_dot_product_attention(
                &f(&q)?,
                &f(&k)?,
                &f(&v)?,
                None::<Tensor>,
                0.0,
                false,
                None,
                false,
            )?
            .f_to_kind(kind)?
        } else {
            Tensor::f_scaled_dot_product_attention(
                &q,
                &k,
                &v,
                None::<Tensor>,
                0.0,
                false,
                None,
                false,
            )?
        };
        let out = out
            .f_transpose(1, 2)?
            .f_reshape([batch, -1, self.heads * dim_head])?;
        let mut out = self.to_out.forward(&out)?;
        if spatial {
            out = out.f_transpose(-1, -2)?.f_reshape([b, c, h, w])?;
        }
        if self.residual_connection {
            out = out.f_add(xs)?;
        }
        Ok(out)
    }
}

/// diffusers `FeedForward` with `activation_fn="geglu"`: `net.0.proj` → GEGLU → `net.2`.
#[derive(Debug)]
struct FeedForward {
    proj: Linear,
    out: Linear,
}

impl FeedForward {
    fn new(p: nn::Path, dim: i64) -> Result<Self> {
        let inner = dim * 4;
        Ok(Self {
            proj: Linear::new(&p / "net" / 0 / "proj", dim, inner * 2, true)?,
            out: Linear::new(&p / "net" / 2, inner, dim, true)?,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let h = self.proj.forward(xs)?.f_chunk(2, -1)?;
        let [hidden, gate] = h.as_slice() else {
            unreachable!("chunk(2) of an even last dimension gives two tensors")
        };
        self.out.forward(&hidden.f_mul(&gate.f_gelu("none")?)?)
    }
}

/// diffusers `BasicTransformerBlock` (layer norms, self-attention, cross-attention, GEGLU).
#[derive(Debug)]
struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: FeedForward,
}

impl BasicTransformerBlock {
    fn new(
        p: nn::Path,
        dim: i64,
        heads: i64,
        dim_head: i64,
        cross_attention_dim: i64,
        upcast: bool,
    ) -> Result<Self> {
        Ok(Self {
            norm1: LayerNorm::new(&p / "norm1", dim, 1e-5)?,
            attn1: Attention::new(&p / "attn1", dim, None, heads, dim_head, upcast)?,
            norm2: LayerNorm::new(&p / "norm2", dim, 1e-5)?,
            attn2: Attention::new(
                &p / "attn2",
                dim,
                Some(cross_attention_dim),
                heads,
                dim_head,
                upcast,
            )?,
            norm3: LayerNorm::new(&p / "norm3", dim, 1e-5)?,
            ff: FeedForward::new(&p / "ff", dim)?,
        })
    }

    fn forward(&self, xs: &Tensor, context: &Tensor) -> Result<Tensor> {
        let xs = self.attn1.forward(&self.norm1.forward(xs)?, None)? + xs;
        let xs = self
            .attn2
            .forward(&self.norm2.forward(&xs)?, Some(context))?
            + xs;
        Ok(self.ff.forward(&self.norm3.forward(&xs)?)? + xs)
    }
}

/// `proj_in`/`proj_out`: 1×1 convolutions (SD 1.x) or linear layers (`use_linear_projection`,
/// SD 2.x).
#[derive(Debug)]
enum Projection {
    Conv(Conv2d),
    Linear(Linear),
}

/// The options a `Transformer2DModel` takes from the UNet config.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TransformerOptions {
    pub heads: i64,
    pub layers: usize,
    pub cross_attention_dim: i64,
    pub groups: i64,
    pub use_linear_projection: bool,
    pub upcast_attention: bool,
}

/// diffusers `Transformer2DModel` for continuous (latent image) input.
#[derive(Debug)]
pub(crate) struct Transformer2DModel {
    norm: GroupNorm,
    proj_in: Projection,
    transformer_blocks: Vec<BasicTransformerBlock>,
    proj_out: Projection,
}

impl Transformer2DModel {
    pub(crate) fn new(p: nn::Path, channels: i64, o: TransformerOptions) -> Result<Self> {
        // diffusers passes `out_channels // num_attention_heads` as the head size.
        let dim_head = channels / o.heads;
        let inner = o.heads * dim_head;
        let (proj_in, proj_out) = if o.use_linear_projection {
            (
                Projection::Linear(Linear::new(&p / "proj_in", channels, inner, true)?),
                Projection::Linear(Linear::new(&p / "proj_out", inner, channels, true)?),
            )
        } else {
            (
                Projection::Conv(Conv2d::new(&p / "proj_in", channels, inner, 1, 1, 0)?),
                Projection::Conv(Conv2d::new(&p / "proj_out", inner, channels, 1, 1, 0)?),
            )
        };
        let blocks = &p / "transformer_blocks";
        let transformer_blocks = (0..o.layers)
            .map(|i| {
                BasicTransformerBlock::new(
                    &blocks / i,
                    inner,
                    o.heads,
                    dim_head,
                    o.cross_attention_dim,
                    o.upcast_attention,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            norm: GroupNorm::new(&p / "norm", o.groups, channels, 1e-6)?,
            proj_in,
            transformer_blocks,
            proj_out,
        })
    }

    pub(crate) fn forward(&self, xs: &Tensor, context: &Tensor) -> Result<Tensor> {
        let (b, _, h, w) = xs.size4()?;
        let normed = self.norm.forward(xs)?;
        let to_tokens = |t: &Tensor| -> Result<Tensor> {
            let c = t.size()[1];
            Ok(t.f_permute([0, 2, 3, 1])?.f_reshape([b, h * w, c])?)
        };
        let mut hs = match &self.proj_in {
            Projection::Conv(conv) => to_tokens(&conv.forward(&normed)?)?,
            Projection::Linear(lin) => lin.forward(&to_tokens(&normed)?)?,
        };
        for block in &self.transformer_blocks {
            hs = block.forward(&hs, context)?;
        }
        let to_image = |t: &Tensor| -> Result<Tensor> {
            let c = t.size()[2];
            Ok(t.f_reshape([b, h, w, c])?
                .f_permute([0, 3, 1, 2])?
                .f_contiguous()?)
        };
        let out = match &self.proj_out {
            Projection::Conv(conv) => conv.forward(&to_image(&hs)?)?,
            Projection::Linear(lin) => to_image(&lin.forward(&hs)?)?,
        };
        Ok(out + xs)
    }
}
