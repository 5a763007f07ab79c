//! The selected pad's controls: prompt and generation settings, Generate/Variations/Cancel
//! with progress, history with restore, and the pad's host parameters.

use crossbeam_channel::Sender;
use nice_plug::prelude::*;
use nice_plug_egui::widgets::ParamSlider;

use std::sync::atomic::Ordering;

use ezaudio_engine::engine::{compute, Job};
use ezaudio_engine::Sampler;

use crate::generation::Command;
use crate::jobs;
use crate::params::{EzAudioParams, PadParams};
use crate::shared::Shared;

use super::model;

pub fn prompt_and_settings(ui: &mut egui::Ui, shared: &Shared, pad: usize) {
    let mut data = shared.store.with(|b| b.pads[pad].clone());
    let before = (data.recipe.clone(), data.seed_locked, data.final_steps);
    let l = ui.label("Prompt");
    ui.add(
        egui::TextEdit::multiline(&mut data.recipe.prompt)
            .desired_rows(2)
            .desired_width(f32::INFINITY)
            .hint_text("a dog barking in the distance"),
    )
    .labelled_by(l.id);
    let l = ui.label("Negative prompt");
    ui.add(
        egui::TextEdit::singleline(&mut data.recipe.negative)
            .desired_width(f32::INFINITY)
            .hint_text("low quality, noise"),
    )
    .labelled_by(l.id);
    let s = &mut data.recipe;
    egui::Grid::new("settings").num_columns(4).show(ui, |ui| {
        let l = ui.label("Seconds");
        ui.add(
            egui::DragValue::new(&mut s.seconds)
                .range(0.5..=10.0)
                .speed(0.1),
        )
        .labelled_by(l.id);
        let l = ui.label("Sampler");
        egui::ComboBox::from_id_salt("sampler")
            .selected_text(model::sampler_label(s.sampler))
            .show_ui(ui, |ui| {
                for choice in Sampler::ALL {
                    ui.selectable_value(&mut s.sampler, choice, model::sampler_label(choice))
                        .on_hover_text(model::sampler_hint(choice));
                }
            })
            .response
            .labelled_by(l.id)
            .on_hover_text(model::sampler_hint(s.sampler));
        ui.end_row();
        let l = ui.label("Steps");
        ui.add(egui::DragValue::new(&mut s.steps).range(1..=jobs::MAX_STEPS))
            .labelled_by(l.id)
            .on_hover_text("Steps of Generate (the draft)");
        let l = ui.label("Final steps");
        ui.add(egui::DragValue::new(&mut data.final_steps).range(1..=jobs::MAX_STEPS))
            .labelled_by(l.id)
            .on_hover_text("Steps of Render final: the clip's own recipe, run again at this count");
        ui.end_row();
        let l = ui.label("Guidance");
        ui.add(
            egui::DragValue::new(&mut s.guidance)
                .range(0.0..=20.0)
                .speed(0.1),
        )
        .labelled_by(l.id);
        let l = ui.label("Rescale");
        ui.add(
            egui::DragValue::new(&mut s.rescale)
                .range(0.0..=1.0)
                .speed(0.01),
        )
        .labelled_by(l.id);
        ui.end_row();
        if s.sampler == Sampler::Ddim {
            let l = ui.label("Eta");
            ui.add(
                egui::DragValue::new(&mut s.eta)
                    .range(0.0..=1.0)
                    .speed(0.01),
            )
            .labelled_by(l.id)
            .on_hover_text("DDIM's noise per step: 0 deterministic, 1 the official default");
            ui.end_row();
        }
        let l = ui.label("Seed");
        ui.add(egui::DragValue::new(&mut s.seed)).labelled_by(l.id);
        ui.checkbox(&mut data.seed_locked, "Lock");
        if ui.button("Randomise").clicked() {
            s.seed = jobs::random_seed();
        }
        ui.end_row();
    });
    if (data.recipe.clone(), data.seed_locked, data.final_steps) != before {
        shared.store.with(|b| {
            let p = &mut b.pads[pad];
            p.recipe = data.recipe;
            p.seed_locked = data.seed_locked;
            p.final_steps = data.final_steps;
        });
    }
}

pub fn generate_controls(
    ui: &mut egui::Ui,
    shared: &Shared,
    commands: &Sender<Command>,
    pad: usize,
) {
    let progress = shared.progress.lock()[pad].clone();
    let data = shared.store.with(|b| b.pads[pad].clone());
    let blocker = model::generate_blocker(&data, &progress);
    ui.horizontal(|ui| {
        let generate = ui.add_enabled(blocker.is_none(), egui::Button::new("Generate"));
        if generate.clicked() {
            let job = jobs::generate_request(&data, jobs::random_seed());
            // Show the seed actually used, so it can be locked.
            shared.store.with(|b| b.pads[pad].recipe.seed = job.seed);
            let _ = commands.send(Command::Generate {
                pad,
                job: Job::Generate(job),
            });
        }
        if let Some(why) = blocker {
            generate.on_disabled_hover_text(why);
        }
        let variations = ui.add_enabled(
            blocker.is_none(),
            egui::Button::new(format!("Variations x{}", super::tools::VARIATIONS)),
        );
        if variations.clicked() {
            let jobs = jobs::variation_requests(&data, super::tools::VARIATIONS, jobs::random_seed);
            let jobs = jobs.into_iter().map(Job::Generate).collect();
            let _ = commands.send(Command::Variations { pad, jobs });
        }
        variations.on_hover_text(
            "Generate several candidates with different seeds; audition them and keep one",
        );
        let final_job = jobs::final_request(&data);
        let render_final = ui.add_enabled(
            final_job.is_ok() && !progress.is_running(),
            egui::Button::new("Render final"),
        );
        match &final_job {
            Ok(recipe) if render_final.clicked() => {
                let _ = commands.send(Command::Generate {
                    pad,
                    job: Job::Generate(recipe.clone()),
                });
            }
            Ok(recipe) => {
                let hint = match jobs::final_differs(recipe) {
                    Some(warning) => warning.to_string(),
                    None => format!(
                        "Make this clip again at {} steps: same prompt, seed and sampler, cleaner",
                        recipe.steps
                    ),
                };
                render_final.on_hover_text(hint);
            }
            Err(why) => {
                render_final.on_disabled_hover_text(*why);
            }
        }
        if ui
            .add_enabled(progress.is_running(), egui::Button::new("Cancel"))
            .clicked()
        {
            let _ = commands.send(Command::Cancel { pad });
        }
    });
    let cost = *shared.step_cost.lock();
    let r = &data.recipe;
    let mut expected = format!(
        "Generate: {}",
        model::expected_text(&cost, r.steps, r.seconds, r.guidance)
    );
    if let Ok(f) = &jobs::final_request(&data) {
        expected += &format!(
            " | Render final: {}",
            model::expected_text(&cost, f.steps, f.seconds, f.guidance)
        );
    }
    ui.small(expected)
        .on_hover_text("Denoising time, from the steps timed so far on this machine");
    let job = shared.jobs.lock()[pad].clone();
    let (fraction, caption) = model::progress_caption(&progress, &job);
    match fraction {
        Some(f) => {
            ui.add(egui::ProgressBar::new(f).text(caption));
        }
        None if !caption.is_empty() => {
            ui.label(caption);
        }
        None => {}
    }
}

pub fn history(ui: &mut egui::Ui, shared: &Shared, pad: usize) {
    let items: Vec<(String, bool)> = shared.store.with(|b| {
        b.pads[pad]
            .history
            .iter()
            .map(|h| {
                (
                    format!("{} (seed {})", h.meta.recipe.prompt, h.meta.recipe.seed),
                    h.clip.is_some(),
                )
            })
            .collect()
    });
    if items.is_empty() {
        return;
    }
    egui::CollapsingHeader::new(format!("History ({})", items.len()))
        .default_open(true)
        .show(ui, |ui| {
            for (i, (label, has_audio)) in items.iter().enumerate() {
                ui.horizontal(|ui| {
                    if ui
                        .add_enabled(*has_audio, egui::Button::new("Restore"))
                        .clicked()
                    {
                        shared.store.restore(pad, i);
                    }
                    ui.label(label);
                    if !has_audio {
                        ui.small("(recipe only)");
                    }
                });
            }
        });
}

pub fn pad_params(ui: &mut egui::Ui, p: &PadParams, setter: &ParamSetter) {
    ui.collapsing("Pad settings", |ui| {
        egui::Grid::new("pad_params").num_columns(2).show(ui, |ui| {
            let row = |ui: &mut egui::Ui, name: &str, add: &dyn Fn(&mut egui::Ui)| {
                ui.label(name);
                add(ui);
                ui.end_row();
            };
            row(ui, "Gain", &|ui| {
                ui.add(ParamSlider::for_param(&p.gain, setter));
            });
            row(ui, "Pan", &|ui| {
                ui.add(ParamSlider::for_param(&p.pan, setter));
            });
            row(ui, "Pitch", &|ui| {
                ui.add(ParamSlider::for_param(&p.pitch, setter));
            });
            row(ui, "Start", &|ui| {
                ui.add(ParamSlider::for_param(&p.start, setter));
            });
            row(ui, "End", &|ui| {
                ui.add(ParamSlider::for_param(&p.end, setter));
            });
            row(ui, "Mode", &|ui| {
                ui.add(ParamSlider::for_param(&p.mode, setter));
            });
            row(ui, "Release", &|ui| {
                ui.add(ParamSlider::for_param(&p.release, setter));
            });
            row(ui, "Choke", &|ui| {
                ui.add(ParamSlider::for_param(&p.choke, setter));
            });
            row(ui, "Output", &|ui| {
                ui.add(ParamSlider::for_param(&p.output, setter));
            });
            row(ui, "Note", &|ui| {
                ui.add(ParamSlider::for_param(&p.note, setter));
            });
        });
    });
}

pub fn global_params(ui: &mut egui::Ui, params: &EzAudioParams, setter: &ParamSetter) {
    egui::Grid::new("global_params")
        .num_columns(2)
        .show(ui, |ui| {
            ui.label("Main gain");
            ui.add(ParamSlider::for_param(&params.main_gain, setter));
            ui.end_row();
            ui.label("Chromatic");
            ui.add(ParamSlider::for_param(&params.chromatic, setter));
            ui.end_row();
            ui.label("Chromatic pad");
            ui.add(ParamSlider::for_param(&params.chromatic_pad, setter));
            ui.end_row();
            ui.label("Root note");
            ui.add(ParamSlider::for_param(&params.chromatic_root, setter));
            ui.end_row();
            let l = ui.label("Generation cores");
            let mut cores = params.generation_cores.load(Ordering::Relaxed);
            let machine = std::thread::available_parallelism().map_or(1, |n| n.get());
            let response = ui
                .add(
                    egui::DragValue::new(&mut cores)
                        .range(0..=machine as u32)
                        .custom_formatter(|v, _| match v as usize {
                            0 => format!("Auto ({})", compute::auto_threads(machine)),
                            n => n.to_string(),
                        })
                        .custom_parser(|t| match t.trim().to_ascii_lowercase() {
                            t if t.starts_with("auto") => Some(0.0),
                            t => t.parse().ok(),
                        }),
                )
                .labelled_by(l.id)
                .on_hover_text(format!(
                    "How many of this machine's {machine} cores generation may use. Auto leaves \
                     one to the host's audio; generation always runs below normal priority."
                ));
            if response.changed() {
                params.generation_cores.store(cores, Ordering::Relaxed);
            }
            ui.end_row();
        });
}
