//! The recipe of one generation: what to make and how, in the official API's names
//! (`api/ezaudio.py`). One type for every place that holds it — the pipeline runs it, a job
//! carries it, a clip's metadata records it, the plugin persists it — so a new setting is
//! added once and cannot be lost between them.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::sampler::Sampler;

/// What to generate and with which sampler settings.
///
/// Serialised flat (`prompt`, `negative`, `seconds`, `steps`, `sampler`, `guidance`, `rescale`,
/// `eta`, `seed`): clip metadata, CLI sidecars and plugin states embed these keys as they are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    pub prompt: String,
    /// Negative prompt; empty means none.
    pub negative: String,
    /// Length of the audio to generate.
    pub seconds: f32,
    /// Sampler steps (model calls; see `Schedule::plan` for the 62 counts with one more).
    pub steps: u32,
    /// Which sampler; missing in recipes written before it existed, which ran DDIM.
    #[serde(default)]
    pub sampler: Sampler,
    /// Classifier-free guidance scale (0 turns guidance off).
    pub guidance: f32,
    /// Guidance rescale (0 = none, 1 = full).
    pub rescale: f32,
    /// DDIM eta (0 = deterministic, 1 = the official default); the other samplers ignore it.
    pub eta: f32,
    pub seed: u64,
}

impl Default for Recipe {
    /// The official API's defaults: 10 s, 100 DDIM steps, guidance 5, rescale 0.75, eta 1.
    fn default() -> Self {
        Self {
            prompt: String::new(),
            negative: String::new(),
            seconds: 10.0,
            steps: 100,
            sampler: Sampler::Ddim,
            guidance: 5.0,
            rescale: 0.75,
            eta: 1.0,
            seed: 0,
        }
    }
}

impl Recipe {
    /// The official defaults for `prompt`.
    pub fn new(prompt: impl Into<String>) -> Self {
        Self {
            prompt: prompt.into(),
            ..Self::default()
        }
    }

    /// Refuses sampler settings the model cannot run (`max_steps`: its training timesteps).
    /// The length is checked where it is used: an edit takes its length from the source.
    pub fn check(&self, max_steps: usize) -> Result<()> {
        if self.steps == 0 || self.steps as usize > max_steps {
            return Err(Error::InvalidInput(format!(
                "steps must be between 1 and {max_steps}, got {}",
                self.steps
            )));
        }
        for (name, v) in [
            ("guidance", self.guidance),
            ("rescale", self.rescale),
            ("eta", self.eta),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(Error::InvalidInput(format!(
                    "{name} must be a finite number >= 0, got {v}"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_flat_with_the_official_names() {
        let r = Recipe {
            negative: "noise".into(),
            seed: 7,
            ..Recipe::new("rain")
        };
        let v = serde_json::to_value(&r).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        assert_eq!(
            keys.len(),
            9,
            "every recipe field is one flat key: {keys:?}"
        );
        assert_eq!(v["prompt"], "rain");
        assert_eq!(v["steps"], 100);
        assert_eq!(v["sampler"], "ddim");
        assert_eq!(serde_json::from_value::<Recipe>(v).unwrap(), r);
    }

    #[test]
    fn a_recipe_without_a_sampler_is_ddim_and_names_round_trip() {
        let mut v = serde_json::to_value(Recipe::new("rain")).unwrap();
        v.as_object_mut().unwrap().remove("sampler");
        let r: Recipe = serde_json::from_value(v).unwrap();
        assert_eq!(r.sampler, Sampler::Ddim);
        for (s, name) in Sampler::ALL.iter().zip(Sampler::NAMES) {
            let with = Recipe {
                sampler: *s,
                ..Recipe::new("rain")
            };
            let v = serde_json::to_value(&with).unwrap();
            assert_eq!(v["sampler"], name);
            assert_eq!(serde_json::from_value::<Recipe>(v).unwrap().sampler, *s);
            assert_eq!(name.parse::<Sampler>().unwrap(), *s);
        }
        assert!("euler"
            .parse::<Sampler>()
            .unwrap_err()
            .to_string()
            .contains("unipc"));
    }

    #[test]
    fn check_names_the_bad_setting() {
        let steps = Recipe {
            steps: 0,
            ..Recipe::default()
        };
        assert!(steps.check(1000).unwrap_err().to_string().contains("steps"));
        let eta = Recipe {
            eta: f32::NAN,
            ..Recipe::default()
        };
        assert!(eta.check(1000).unwrap_err().to_string().contains("eta"));
        assert!(Recipe::default().check(1000).is_ok());
        assert!(Recipe::default().check(99).is_err());
    }
}
