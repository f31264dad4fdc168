//! CLIP's text transformer as OWL-ViT uses it (`OwlViTTextTransformer` in `transformers/models/owlvit/
//! modeling_owlvit.py`, the same as `CLIPTextTransformer`): token + position embeddings, the CLIP encoder under a
//! causal and padding mask, `final_layer_norm`, and the hidden state at each query's end token as its embedding.

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig};
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

use super::config::OwlVitTextConfig;
use super::tokenizer::Tokens;
use crate::vit::model::ClipEncoder;

/// `OwlViTTextTransformer` (HF parameter names under `owlvit.text_model.`).
#[derive(Module, Debug)]
pub struct ClipTextTransformer {
    embeddings: TextEmbeddings,
    encoder: ClipEncoder,
    final_layer_norm: LayerNorm,
    num_heads: usize,
}

/// `OwlViTTextEmbeddings`.
#[derive(Module, Debug)]
struct TextEmbeddings {
    token_embedding: Embedding,
    position_embedding: Embedding,
}

impl ClipTextTransformer {
    /// A freshly initialised tower of the given shape (weights are normally loaded, see [`super::load`]).
    pub fn new(config: &OwlVitTextConfig, device: &Device) -> Self {
        Self {
            embeddings: TextEmbeddings {
                token_embedding: EmbeddingConfig::new(config.vocab_size, config.hidden_size).init(device),
                position_embedding: EmbeddingConfig::new(config.max_position_embeddings, config.hidden_size)
                    .init(device),
            },
            encoder: ClipEncoder::new(&config.encoder_shape(), device),
            final_layer_norm: LayerNormConfig::new(config.hidden_size).with_epsilon(config.layer_norm_eps).init(device),
            num_heads: config.num_attention_heads,
        }
    }

    /// The pooled output `[queries, hidden]`: `final_layer_norm` of each query's hidden state at its end token,
    /// found as the reference does, at the largest token id (the end token has the largest id in CLIP's
    /// vocabulary).
    pub fn forward(&self, tokens: &Tokens, device: &Device) -> Tensor<2> {
        let queries = tokens.input_ids.len();
        let length = tokens.input_ids.first().map_or(0, Vec::len);
        let ids: Vec<i64> = tokens.input_ids.iter().flatten().map(|&id| i64::from(id)).collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [queries, length]), device);
        let positions = Tensor::<1, Int>::arange(0..length as i64, device).unsqueeze::<2>();
        let hidden = self.embeddings.token_embedding.forward(ids)
            + self.embeddings.position_embedding.forward(positions);
        let hidden = self.encoder.forward(hidden, Some(self.mask(tokens, device)));
        let hidden = self.final_layer_norm.forward(hidden);
        let ends: Vec<i64> = tokens.input_ids.iter().map(|ids| first_argmax(ids) as i64).collect();
        let ends = Tensor::<1, Int>::from_data(TensorData::new(ends, [queries]), device);
        let [_, _, width] = hidden.dims();
        let index = ends.reshape([queries, 1, 1]).expand([queries, 1, width]);
        hidden.gather(1, index).reshape([queries, width])
    }

    /// `[queries, heads, length, length]`, true where query position `i` may not see key position `j`: later
    /// positions (the causal mask) and padding (the attention mask), as the reference adds both.
    fn mask(&self, tokens: &Tokens, device: &Device) -> Tensor<4, Bool> {
        let queries = tokens.attention_mask.len();
        let length = tokens.attention_mask.first().map_or(0, Vec::len);
        let blocked: Vec<bool> = tokens
            .attention_mask
            .iter()
            .flat_map(|keep| (0..length).flat_map(move |i| (0..length).map(move |j| j > i || keep[j] == 0)))
            .collect();
        Tensor::<4, Bool>::from_data(TensorData::new(blocked, [queries, 1, length, length]), device).expand([
            queries,
            self.num_heads,
            length,
            length,
        ])
    }
}

/// Index of the first largest id (`torch.argmax` returns the first maximum).
fn first_argmax(ids: &[u32]) -> usize {
    ids.iter().enumerate().fold(0, |best, (i, &id)| if id > ids[best] { i } else { best })
}
