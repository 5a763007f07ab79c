//! Every job kind runs with every sampler: plain generation, span edit (the samples outside
//! the regenerated chunk stay the input's, bit for bit), out-painting and ControlNet, with
//! guidance and rescale as the recipe says. No reference numbers here (those are in
//! `sampler_fast`): shapes, finiteness, exactness of what is kept, and that the sampler is
//! really the one asked for.

use candle_core::DType;
use ezaudio_engine::install::{ControlNetFolder, ModelFolder};
use ezaudio_engine::model::sampler::Sampler;
use ezaudio_engine::pipeline::{ControlInput, ControlNet, Pipeline, RunOptions, Span};
use ezaudio_engine::Recipe;

use crate::common::fixtures_dir;

#[test]
fn every_job_kind_runs_with_every_sampler() {
    let folder =
        ModelFolder::open(&fixtures_dir().join("model-tiny")).unwrap_or_else(|e| panic!("{e}"));
    let pipe = Pipeline::load(&folder, &crate::common::test_device(), DType::F32)
        .unwrap_or_else(|e| panic!("{e}"));
    let cn = ControlNet::load(
        &ControlNetFolder::open(&fixtures_dir().join("controlnet"))
            .unwrap_or_else(|e| panic!("{e}")),
        &pipe,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let sr = pipe.sample_rate() as usize;
    let source: Vec<f32> = (0..sr).map(|i| 0.5 * (i as f32 * 0.05).sin()).collect();
    let mut finals = vec![];
    for sampler in Sampler::ALL {
        let recipe = Recipe {
            steps: 3,
            seconds: 0.6,
            sampler,
            seed: 5,
            ..Recipe::new("rain on a tin roof")
        };
        let gen = pipe
            .generate(&recipe, &RunOptions::default(), &mut |_| true)
            .unwrap_or_else(|e| panic!("{sampler}: {e}"));
        assert_eq!(
            gen.samples.len(),
            (0.6 * sr as f64).round() as usize,
            "{sampler}"
        );
        assert!(
            gen.samples.iter().all(|v| v.is_finite()),
            "{sampler}: generate"
        );
        finals.push(gen.final_latent);

        // Inpainting 0.4..0.6 s with 0.1 s of context: the chunk is 0.3..0.7 s.
        let span = Span {
            start: 0.4,
            length: 0.2,
            boundary: 0.1,
        };
        let edit = pipe
            .edit(&source, span, &recipe, &mut |_| true)
            .unwrap_or_else(|e| panic!("{sampler}: {e}"));
        assert_eq!(edit.samples.len(), source.len(), "{sampler}: edit length");
        let (a, b) = (sr * 3 / 10, sr * 7 / 10);
        assert_eq!(
            &edit.samples[..a],
            &source[..a],
            "{sampler}: samples before the chunk"
        );
        assert_eq!(
            &edit.samples[b..],
            &source[b..],
            "{sampler}: samples after the chunk"
        );
        assert!(edit.samples[a..b].iter().all(|v| v.is_finite()));
        assert_ne!(
            &edit.samples[a..b],
            &source[a..b],
            "{sampler}: the span was regenerated"
        );

        // Out-painting: 0.3 s past the end.
        let out = Span {
            start: 0.9,
            length: 0.4,
            boundary: 0.1,
        };
        let outp = pipe
            .edit(&source, out, &recipe, &mut |_| true)
            .unwrap_or_else(|e| panic!("{sampler}: {e}"));
        assert_eq!(
            outp.samples.len(),
            (1.3 * sr as f64).round() as usize,
            "{sampler}: out-paint length"
        );
        assert_eq!(
            &outp.samples[..sr * 8 / 10],
            &source[..sr * 8 / 10],
            "{sampler}: kept part"
        );
        assert!(outp.samples.iter().all(|v| v.is_finite()));

        let control = ControlInput::Envelope(vec![(0.0, 0.0), (0.3, 1.0), (0.6, 0.2)]);
        let ctl = pipe
            .generate_controlled(
                &cn,
                &recipe,
                &control,
                1.0,
                &RunOptions::default(),
                &mut |_| true,
            )
            .unwrap_or_else(|e| panic!("{sampler}: {e}"));
        assert!(!ctl.samples.is_empty() && ctl.samples.iter().all(|v| v.is_finite()));
    }
    // The recipe's sampler is the one that ran: four different results from one seed.
    for i in 0..finals.len() {
        for j in 0..i {
            let d = crate::common::rel_error(&finals[i], &finals[j]);
            assert!(
                d > 1e-3,
                "{} and {} gave the same latent",
                Sampler::ALL[i],
                Sampler::ALL[j]
            );
        }
    }
}
