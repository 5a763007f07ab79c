//! The T5 tokenizer as EzAudio calls it:
//! `tokenizer(prompts, max_length=..., padding='max_length', truncation=True)`.
//!
//! The published `tokenizer.json` has `padding` and `truncation` null (transformers sets them per
//! call), so both are configured here: right truncation to `max_length` *including* the `</s>`
//! that the post-processor appends (the text is cut, `</s>` stays last), then right padding with
//! `<pad>` (id 0) to exactly `max_length`.

use std::path::Path;

use candle_core::{Device, Tensor};
use tokenizers::{
    PaddingDirection, PaddingParams, PaddingStrategy, PostProcessor, Tokenizer,
    TruncationDirection, TruncationParams, TruncationStrategy,
};

use crate::error::{Error, Result};

pub struct TextTokenizer {
    inner: Tokenizer,
    max_length: usize,
}

impl TextTokenizer {
    /// Reads a Hugging Face `tokenizer.json` (e.g. from a flan-t5 model folder).
    pub fn from_file(path: &Path, max_length: usize) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::Tokenizer(format!(
                "{}: file not found",
                path.display()
            )));
        }
        let mut inner = Tokenizer::from_file(path).map_err(|e| {
            Error::Tokenizer(format!(
                "{}: not a readable tokenizer.json: {e}",
                path.display()
            ))
        })?;
        let added = inner
            .get_post_processor()
            .map_or(0, |p| p.added_tokens(false));
        if max_length == 0 || max_length < added {
            return Err(Error::InvalidInput(format!(
                "tokenizer max_length {max_length} leaves no room for the {added} special token(s)"
            )));
        }
        // T5 pads with `<pad>` = 0; fall back to 0 for files that do not name it.
        let pad_token = "<pad>".to_string();
        let pad_id = inner.token_to_id(&pad_token).unwrap_or(0);
        inner
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| {
                Error::Tokenizer(format!("{}: cannot set truncation: {e}", path.display()))
            })?;
        inner.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(max_length),
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id,
            pad_type_id: 0,
            pad_token,
        }));
        Ok(Self { inner, max_length })
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Token ids (B, max_length) u32 and attention mask (B, max_length) u8 (1 = real token,
    /// including the final `</s>`). The empty prompt gives `[</s>, <pad>, ...]`.
    pub fn encode_batch(&self, prompts: &[&str], device: &Device) -> Result<(Tensor, Tensor)> {
        if prompts.is_empty() {
            return Err(Error::InvalidInput("no prompt to tokenize".into()));
        }
        let encodings = self
            .inner
            .encode_batch(prompts.to_vec(), true)
            .map_err(|e| Error::Tokenizer(format!("cannot tokenize prompt: {e}")))?;
        let mut ids = Vec::with_capacity(prompts.len() * self.max_length);
        let mut mask = Vec::with_capacity(prompts.len() * self.max_length);
        for enc in &encodings {
            if enc.get_ids().len() != self.max_length {
                return Err(Error::Tokenizer(format!(
                    "tokenizer produced {} tokens instead of max_length {}",
                    enc.get_ids().len(),
                    self.max_length
                )));
            }
            ids.extend_from_slice(enc.get_ids());
            mask.extend(enc.get_attention_mask().iter().map(|&m| u8::from(m != 0)));
        }
        let shape = (prompts.len(), self.max_length);
        Ok((
            Tensor::from_vec(ids, shape, device)?,
            Tensor::from_vec(mask, shape, device)?,
        ))
    }
}
