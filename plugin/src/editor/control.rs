//! The selected pad's loudness control (EzAudio-ControlNet): follow the sidechain (arm a
//! capture, play the section), or draw an envelope; the captured loudness, the drawn envelope
//! and the generated clip's loudness are drawn over each other on one time axis.
//!
//! Every level is shown as the ControlNet sees loudness: dB normalised so that the loudest
//! frame is 1 and -60 dB below it is 0.

use crossbeam_channel::Sender;
use ezaudio_engine::audio::{Clip, ClipKind};
use nice_plug::prelude::*;

use crate::generation::Command;
use crate::jobs::{envelope_job, random_seed};
use crate::layout::{CAPTURE_SECONDS, MIN_CAPTURE_SECONDS};
use crate::params::{EzAudioParams, PadParams};
use crate::shared::Shared;
use crate::state::{loudness_view, MAX_POINTS, VIEW_HZ};
use crate::store::PadData;

/// Range of the normalised views, as the energy conditioner's `min_db`.
const RANGE_DB: f32 = 60.0;

/// Editor-side cache: the loudness view of the pad's clip, recomputed when the clip changes.
#[derive(Default)]
pub struct ControlView {
    clip_view: Option<(usize, u64, Vec<f32>)>,
    dragging: Option<usize>,
}

/// RMS values -> normalised dB (loudest 1, `RANGE_DB` below it 0).
pub fn normalised_db(rms: &[f32]) -> Vec<f32> {
    let db: Vec<f32> = rms.iter().map(|r| 20.0 * r.max(1e-9).log10()).collect();
    let top = db.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    db.iter()
        .map(|d| ((d - top) / RANGE_DB + 1.0).clamp(0.0, 1.0))
        .collect()
}

fn clip_view(clip: &Clip) -> Vec<f32> {
    normalised_db(&loudness_view(&clip.samples, clip.sample_rate))
}

/// Inserts a point keeping the envelope sorted by time; returns its index.
pub fn insert_point(points: &mut Vec<(f32, f32)>, t: f32, level: f32) -> Option<usize> {
    if points.len() >= MAX_POINTS {
        return None;
    }
    let i = points.partition_point(|p| p.0 <= t);
    points.insert(i, (t.max(0.0), level.clamp(0.0, 1.0)));
    Some(i)
}

impl ControlView {
    pub fn show(
        &mut self,
        ui: &mut egui::Ui,
        shared: &Shared,
        params: &EzAudioParams,
        setter: Option<&ParamSetter>,
        commands: &Sender<Command>,
        pad: usize,
    ) {
        let mut data = shared.store.with(|b| b.pads[pad].clone());
        let before = data.control.clone();
        let (serial, clip) = (data.serial, data.clip.clone());
        ui.separator();
        ui.strong("Loudness control");
        ui.horizontal(|ui| {
            ui.checkbox(&mut data.control.follow_sidechain, "Follow sidechain")
                .on_hover_text("When a sidechain capture ends, this pad generates its prompt following the captured loudness");
            let armed = params.capture.value();
            let label = if armed { "Stop capture" } else { "Arm capture" };
            if let Some(setter) = setter {
                if ui.selectable_label(armed, label).clicked() {
                    setter.begin_set_parameter(&params.capture);
                    setter.set_parameter(&params.capture, !armed);
                    setter.end_set_parameter(&params.capture);
                }
            }
            let buffer = shared.capture.lock().clone();
            let status = match buffer {
                Some(b) if b.is_recording() => format!("Recording {:.1} s", b.recorded() as f32 / b.rate().max(1) as f32),
                Some(_) if armed => "Armed: waiting for the buffer or playback".into(),
                None => "Capture starts once the plugin is active".into(),
                Some(_) => shared.capture_note.lock().clone(),
            };
            ui.small(status);
        });
        if data.control.follow_sidechain {
            transport_lock_row(ui, &data, params.pad(pad), setter);
        }
        ui.horizontal(|ui| {
            let l = ui.label("Strength");
            ui.add(egui::Slider::new(&mut data.control.scale, 0.0..=2.0).fixed_decimals(2))
                .labelled_by(l.id);
            let l = ui.label("Noise gate");
            ui.add(
                egui::DragValue::new(&mut data.control.gate)
                    .range(0.0..=0.5)
                    .speed(0.005),
            )
            .labelled_by(l.id);
        });

        let seconds = data
            .recipe
            .seconds
            .clamp(MIN_CAPTURE_SECONDS, CAPTURE_SECONDS);
        let width = ui.available_width().clamp(200.0, 620.0);
        let (rect, response) =
            ui.allocate_exact_size(egui::vec2(width, 90.0), egui::Sense::click_and_drag());
        let painter = ui.painter_at(rect);
        painter.rect_filled(rect, 3.0, egui::Color32::from_gray(24));
        let to_screen = |t: f32, v: f32| {
            egui::pos2(
                rect.left() + t / seconds * rect.width(),
                rect.bottom() - v.clamp(0.0, 1.0) * rect.height(),
            )
        };
        let from_screen = |p: egui::Pos2| {
            (
                ((p.x - rect.left()) / rect.width()).clamp(0.0, 1.0) * seconds,
                ((rect.bottom() - p.y) / rect.height()).clamp(0.0, 1.0),
            )
        };
        let curve = |values: &[f32], rate: f32, color: egui::Color32| {
            let pts: Vec<egui::Pos2> = values
                .iter()
                .enumerate()
                .map(|(i, v)| to_screen((i as f32 + 0.5) / rate, *v))
                .filter(|p| p.x <= rect.right())
                .collect();
            painter.add(egui::Shape::line(pts, egui::Stroke::new(1.5, color)));
        };
        // Captured loudness (orange), the generated clip's loudness (blue) and, for a controlled
        // clip, the condition the model received (green).
        curve(
            &normalised_db(&data.control.capture_view),
            VIEW_HZ,
            egui::Color32::from_rgb(240, 160, 60),
        );
        if let Some(clip) = &clip {
            if self
                .clip_view
                .as_ref()
                .is_none_or(|(p, s, _)| (*p, *s) != (pad, serial))
            {
                self.clip_view = Some((pad, serial, clip_view(clip)));
            }
            if let Some((_, _, v)) = &self.clip_view {
                curve(v, VIEW_HZ, egui::Color32::from_rgb(110, 190, 240));
            }
            if let ClipKind::Controlled {
                condition,
                frame_rate,
                ..
            } = &clip.meta.kind
            {
                curve(
                    condition,
                    frame_rate.max(1.0),
                    egui::Color32::from_rgb(120, 220, 120),
                );
            }
        }
        // The drawn envelope: click to add, drag to move, right-click to remove.
        let env = &mut data.control.envelope;
        let handle = |i: usize, env: &[(f32, f32)]| to_screen(env[i].0, env[i].1);
        let near = |p: egui::Pos2, env: &[(f32, f32)]| {
            (0..env.len()).find(|&i| handle(i, env).distance(p) < 7.0)
        };
        if let Some(p) = response.interact_pointer_pos() {
            if response.drag_started() {
                self.dragging = near(p, env);
            }
            if response.secondary_clicked() {
                if let Some(i) = near(p, env) {
                    env.remove(i);
                }
            } else if response.clicked() && near(p, env).is_none() {
                let (t, v) = from_screen(p);
                insert_point(env, t, v);
            }
            if let Some(i) = self
                .dragging
                .filter(|&i| i < env.len() && response.dragged())
            {
                let (t, v) = from_screen(p);
                let lo = if i > 0 { env[i - 1].0 } else { 0.0 };
                let hi = env.get(i + 1).map(|q| q.0).unwrap_or(seconds);
                env[i] = (t.clamp(lo, hi), v);
            }
        }
        if response.drag_stopped() {
            self.dragging = None;
        }
        if !env.is_empty() {
            let mut pts: Vec<egui::Pos2> = vec![to_screen(0.0, env[0].1)];
            pts.extend((0..env.len()).map(|i| handle(i, env)));
            pts.push(to_screen(seconds, env[env.len() - 1].1));
            painter.add(egui::Shape::line(
                pts,
                egui::Stroke::new(1.0, egui::Color32::WHITE),
            ));
            for i in 0..env.len() {
                painter.circle_filled(handle(i, env), 4.0, egui::Color32::WHITE);
            }
        }
        ui.horizontal(|ui| {
            ui.small("orange: captured  blue: clip  green: control used  white: drawn (click, drag, right-click)");
        });
        ui.horizontal(|ui| {
            let can = !data.control.envelope.is_empty() && !data.recipe.prompt.trim().is_empty();
            if ui
                .add_enabled(can, egui::Button::new("Generate from envelope"))
                .clicked()
            {
                let seed = random_seed();
                if let Some(job) = envelope_job(&data, seed) {
                    if let ezaudio_engine::engine::Job::GenerateControlled(c) = &job {
                        data.recipe.seed = c.recipe.seed;
                    }
                    let _ = commands.send(Command::Generate { pad, job });
                }
            }
            if ui.button("Clear envelope").clicked() {
                data.control.envelope.clear();
            }
            if let Some(start) = data.control.capture_start {
                let rate = data.control.capture_rate.max(1) as f64;
                ui.small(format!(
                    "Captured from {:.3} s of the timeline",
                    start as f64 / rate
                ));
            }
        });
        let seed_changed = data.recipe.seed != shared.store.with(|b| b.pads[pad].recipe.seed);
        if data.control != before || seed_changed {
            // Only what this panel edits: the generation thread writes the capture fields.
            let edited = data.control.sanitized();
            shared.store.with(|b| {
                let c = &mut b.pads[pad].control;
                c.follow_sidechain = edited.follow_sidechain;
                c.envelope = edited.envelope;
                c.scale = edited.scale;
                c.gate = edited.gate;
                b.pads[pad].recipe.seed = data.recipe.seed;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_are_normalised_db() {
        let v = normalised_db(&[1.0, 0.1, 0.001, 0.0]);
        assert_eq!(v[0], 1.0);
        assert!((v[1] - 2.0 / 3.0).abs() < 1e-5);
        assert_eq!((v[2], v[3]), (0.0, 0.0));
    }

    #[test]
    fn points_stay_sorted() {
        let mut p = vec![(0.0, 0.0), (1.0, 1.0)];
        assert_eq!(insert_point(&mut p, 0.5, 2.0), Some(1));
        assert_eq!(p, vec![(0.0, 0.0), (0.5, 1.0), (1.0, 1.0)]);
    }
}

/// The follow pad's transport lock (a host parameter, `padN_lock`) and where it will play.
fn transport_lock_row(
    ui: &mut egui::Ui,
    data: &PadData,
    pad_params: &PadParams,
    setter: Option<&ParamSetter>,
) {
    ui.horizontal(|ui| {
        let mut locked = pad_params.lock.value();
        let toggle = ui
            .add_enabled(
                setter.is_some(),
                egui::Checkbox::new(&mut locked, "Lock to transport"),
            )
            .on_hover_text(
                "Plays the clip when the host's transport passes where the capture started, \
                 so it lands in the bounce without a MIDI note; stops with the transport",
            );
        if let (true, Some(setter)) = (toggle.changed(), setter) {
            setter.begin_set_parameter(&pad_params.lock);
            setter.set_parameter(&pad_params.lock, locked);
            setter.end_set_parameter(&pad_params.lock);
        }
        let c = &data.control;
        let note = match (c.capture_start, locked) {
            (_, false) => "Plays from MIDI only".to_string(),
            (None, true) => "No capture position yet: plays from MIDI until one is recorded".into(),
            (Some(start), true) => {
                let rate = c.capture_rate.max(1) as f64;
                format!("Plays at {:.3} s on the timeline", start as f64 / rate)
            }
        };
        ui.small(note);
    });
}
