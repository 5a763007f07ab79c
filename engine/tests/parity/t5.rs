//! Tokenizer and T5 encoder against `t5/` (and the text encoder folder of `model-tiny/`).

use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Device, Tensor};
use ezaudio_engine::model::t5::{
    load_t5_folder, relative_position_bucket, T5Config, T5Encoder, TextTokenizer,
};
use ezaudio_engine::weights::{Checkpoint, LayoutProbe};

use super::common::*;

fn prompts() -> (Vec<String>, usize) {
    let json = read_json("t5/prompts.json");
    let prompts = json["prompts"]
        .as_array()
        .expect("prompts.json: 'prompts' is not a list")
        .iter()
        .map(|p| {
            p.as_str()
                .expect("prompts.json: a prompt is not a string")
                .to_string()
        })
        .collect();
    let max_length = json["max_length"]
        .as_u64()
        .expect("prompts.json: no 'max_length'") as usize;
    (prompts, max_length)
}

fn i64_rows(t: &Tensor) -> Vec<Vec<i64>> {
    t.to_dtype(DType::I64).unwrap().to_vec2::<i64>().unwrap()
}

/// The fixture encoder, strictly loaded (every tensor of the file used).
fn fixture_encoder() -> (T5Encoder, T5Config) {
    let cfg = T5Config::from_file(&fixture("t5/config.json")).unwrap();
    let ckpt = Checkpoint::load(&fixture("t5/model.safetensors"), None, None).unwrap();
    let enc = T5Encoder::new(
        &cfg,
        ckpt.var_builder(DType::F32, &crate::common::test_device()),
    )
    .unwrap();
    ckpt.ensure_all_used(|_| false).unwrap();
    (enc, cfg)
}

#[test]
fn t5_tokenizer_ids_and_mask_exact() {
    let (prompts, max_length) = prompts();
    let refs = load("t5/outputs.safetensors");
    let tok = TextTokenizer::from_file(&fixture("t5/tokenizer.json"), max_length).unwrap();
    let list: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let (ids, mask) = tok
        .encode_batch(&list, &crate::common::test_device())
        .unwrap();
    assert_eq!(ids.dtype(), DType::U32);
    assert_eq!(mask.dtype(), DType::U8);
    let (ids, mask) = (i64_rows(&ids), i64_rows(&mask));
    let (ref_ids, ref_mask) = (
        i64_rows(get(&refs, "input_ids")),
        i64_rows(get(&refs, "attention_mask")),
    );
    assert_eq!(ids.len(), prompts.len());
    for (i, p) in prompts.iter().enumerate() {
        assert_eq!(ids[i], ref_ids[i], "input_ids of prompt {i} {p:?}");
        assert_eq!(mask[i], ref_mask[i], "attention_mask of prompt {i} {p:?}");
    }
    // One at a time gives the same rows (padding is fixed, not to the longest of the batch).
    for (i, p) in list.iter().enumerate() {
        let (ids1, _) = tok.encode_batch(&[p], &Device::Cpu).unwrap();
        assert_eq!(i64_rows(&ids1)[0], ref_ids[i], "prompt {i} alone");
    }
}

#[test]
fn t5_tokenizer_missing_or_corrupt_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("tokenizer.json");
    let err = TextTokenizer::from_file(&missing, 8)
        .err()
        .expect("missing file must fail");
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
    std::fs::write(&missing, "{ not json").unwrap();
    assert!(TextTokenizer::from_file(&missing, 8).is_err());
}

#[test]
fn t5_encoder_last_hidden_state() {
    let refs = load("t5/outputs.safetensors");
    let (enc, cfg) = fixture_encoder();
    let expected = get(&refs, "last_hidden_state");
    // As recorded: int64 ids and an int64 mask.
    let out = enc
        .forward(get(&refs, "input_ids"), get(&refs, "attention_mask"))
        .unwrap();
    assert_eq!(enc.hidden_size(), cfg.d_model);
    let rel = rel_error(&out, expected);
    println!("t5 last_hidden_state rel error {rel:e}");
    assert_close("t5 last_hidden_state", &out, expected, TOL_FORWARD);

    // Through our tokenizer (u32 ids, u8 mask), as the pipeline does.
    let (prompts, max_length) = prompts();
    let tok = TextTokenizer::from_file(&fixture("t5/tokenizer.json"), max_length).unwrap();
    let list: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let (ids, mask) = tok
        .encode_batch(&list, &crate::common::test_device())
        .unwrap();
    let out = enc.forward(&ids, &mask).unwrap();
    assert_close(
        "t5 last_hidden_state via tokenizer",
        &out,
        expected,
        TOL_FORWARD,
    );
}

#[test]
fn t5_debug_tensors() {
    let refs = load("t5/outputs.safetensors");
    let dbg = load("t5/debug.safetensors");
    let (enc, cfg) = fixture_encoder();

    let positions = get(&dbg, "relative_position").to_vec1::<i64>().unwrap();
    let buckets = get(&dbg, "relative_bucket").to_vec1::<i64>().unwrap();
    for (p, b) in positions.iter().zip(&buckets) {
        let ours = relative_position_bucket(
            *p,
            cfg.relative_attention_num_buckets,
            cfg.relative_attention_max_distance,
        );
        assert_eq!(ours as i64, *b, "bucket of relative position {p}");
    }

    let expected_bias = get(&dbg, "position_bias");
    let len = expected_bias.dim(1).unwrap();
    let bias = enc.position_bias(len).unwrap();
    println!(
        "t5 position_bias rel error {:e}",
        rel_error(&bias, expected_bias)
    );
    assert_close("t5 position_bias", &bias, expected_bias, TOL_FORWARD);

    let states = enc
        .forward_hidden_states(get(&refs, "input_ids"), get(&refs, "attention_mask"))
        .unwrap();
    let n_ref = dbg
        .keys()
        .filter(|k| k.starts_with("hidden_states."))
        .count();
    assert_eq!(states.len(), n_ref, "number of hidden states");
    for (i, s) in states.iter().enumerate() {
        let name = format!("hidden_states.{i}");
        let r = get(&dbg, &name);
        println!("t5 {name} rel error {:e}", rel_error(s, r));
        assert_close(&name, s, r, TOL_FORWARD);
    }
}

#[test]
fn t5_model_tiny_folder_loads() {
    let dir = fixture("model-tiny/text_encoder");
    let (enc, cfg) = load_t5_folder(&dir, DType::F32, &crate::common::test_device()).unwrap();
    let (prompts, max_length) = prompts();
    let tok = TextTokenizer::from_file(&dir.join("tokenizer.json"), max_length).unwrap();
    let list: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let (ids, mask) = tok
        .encode_batch(&list, &crate::common::test_device())
        .unwrap();
    let out = enc.forward(&ids, &mask).unwrap();
    assert_eq!(out.dims(), &[list.len(), max_length, cfg.d_model]);
}

/// A folder laid out like the real flan-t5-xl download: two shards with an index, both
/// embedding names, and decoder tensors the encoder must ignore.
#[test]
fn t5_sharded_folder_with_decoder_loads_strictly() {
    let weights = load("t5/model.safetensors");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("t5/config.json"), dir.path().join("config.json")).unwrap();
    let mut names: Vec<&String> = weights.keys().collect();
    names.sort();
    let (first, second) = names.split_at(names.len() / 2);
    let mut index = serde_json::Map::new();
    for (file, part) in [
        ("model-00001-of-00002.safetensors", first),
        ("model-00002-of-00002.safetensors", second),
    ] {
        let mut shard: HashMap<String, Tensor> = part
            .iter()
            .map(|n| ((*n).clone(), weights[*n].clone()))
            .collect();
        if file.starts_with("model-00002") {
            shard.insert(
                "encoder.embed_tokens.weight".into(),
                weights["shared.weight"].clone(),
            );
            shard.insert(
                "decoder.final_layer_norm.weight".into(),
                Tensor::ones(3, DType::F32, &Device::Cpu).unwrap(),
            );
            shard.insert(
                "lm_head.weight".into(),
                Tensor::ones((2, 3), DType::F32, &Device::Cpu).unwrap(),
            );
        }
        for n in shard.keys() {
            index.insert(n.clone(), serde_json::Value::String(file.into()));
        }
        candle_core::safetensors::save(&shard, dir.path().join(file)).unwrap();
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": index });
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();

    let (enc, _) = load_t5_folder(dir.path(), DType::F32, &Device::Cpu).unwrap();
    let refs = load("t5/outputs.safetensors");
    let out = enc
        .forward(get(&refs, "input_ids"), get(&refs, "attention_mask"))
        .unwrap();
    assert_close(
        "sharded t5",
        &out,
        get(&refs, "last_hidden_state"),
        TOL_FORWARD,
    );

    // An encoder tensor the model does not use, in a third shard, is reported (strict loading).
    let mut extra: HashMap<String, Tensor> = HashMap::new();
    let stray = "encoder.block.99.layer.0.layer_norm.weight";
    extra.insert(
        stray.into(),
        Tensor::ones(3, DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&extra, dir.path().join("extra.safetensors")).unwrap();
    let mut index = index;
    index["weight_map"][stray] = serde_json::Value::String("extra.safetensors".into());
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    let err = load_t5_folder(dir.path(), DType::F32, &Device::Cpu)
        .err()
        .expect("stray tensor must fail");
    assert!(err.to_string().contains(stray), "{err}");
}

fn layout(entry: &str) -> BTreeMap<String, Vec<usize>> {
    let json = read_json("real-layout.json");
    let tensors = json[entry]["tensors"]
        .as_object()
        .unwrap_or_else(|| panic!("real-layout.json: no '{entry}.tensors'"));
    tensors
        .iter()
        .map(|(k, v)| {
            let dims = v
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            (k.clone(), dims)
        })
        .collect()
}

fn check_real_layout(entry: &str, cfg: T5Config) {
    let probe = LayoutProbe::new(layout(entry));
    let enc = T5Encoder::new(&cfg, probe.var_builder(DType::F32, &Device::Cpu)).unwrap();
    assert_eq!(enc.hidden_size(), cfg.d_model);
    // The layout lists the tied token embedding under both of its names; the encoder reads
    // `shared.weight`, so the alias `encoder.embed_tokens.weight` is legitimately never requested.
    let alias = "'encoder.embed_tokens.weight' in the layout is never used by the model";
    let problems: Vec<String> = probe
        .mismatches()
        .into_iter()
        .filter(|m| m != alias)
        .collect();
    assert!(problems.is_empty(), "{entry}: {problems:#?}");
    assert!(probe.requested().contains_key("shared.weight"));
}

#[test]
fn t5_real_layout_flan_t5_xl() {
    check_real_layout("t5_xl_encoder", T5Config::flan_t5_xl());
}

#[test]
fn t5_real_layout_flan_t5_large() {
    check_real_layout("t5_large_encoder", T5Config::flan_t5_large());
}

/// Reduced precision is not a parity target, but must run and stay close.
#[test]
fn t5_half_precision_stays_close() {
    let refs = load("t5/outputs.safetensors");
    let cfg = T5Config::from_file(&fixture("t5/config.json")).unwrap();
    let ckpt = Checkpoint::load(&fixture("t5/model.safetensors"), None, None).unwrap();
    for dtype in [DType::F16, DType::BF16] {
        let vb = ckpt.var_builder(dtype, &crate::common::test_device());
        // bf16 on an AVX512-BF16 CPU: bf16 Linear weights, f32 activations (model::linear).
        let compute = ezaudio_engine::model::linear::compute_dtype(&vb);
        let enc = T5Encoder::new(&cfg, vb).unwrap();
        let out = enc
            .forward(get(&refs, "input_ids"), get(&refs, "attention_mask"))
            .unwrap();
        assert_eq!(out.dtype(), compute);
        let rel = rel_error(&out, get(&refs, "last_hidden_state"));
        println!("t5 {dtype:?} rel error {rel:e}");
        assert!(rel < 5e-2, "{dtype:?}: rel error {rel:e}");
    }
}
