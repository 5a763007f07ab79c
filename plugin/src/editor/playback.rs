//! The selected pad's Play/Stop and output level (off / peak / LUFS target). The level is
//! stored per pad and applied by the publisher as a gain (the clip stays raw); the editor
//! shows the gain it comes to, cached per clip and setting (measuring LUFS each frame would
//! cost the UI thread milliseconds).

use crate::level::{self, OutputLevel};
use crate::shared::Shared;

/// (pad, clip serial, level) -> gain in dB, for the readout.
#[derive(Default)]
pub struct LevelView {
    cached: Option<((usize, u64, OutputLevel), f32)>,
}

/// The three choices of the level selector, each with its default target.
pub const CHOICES: [(&str, OutputLevel); 3] = [
    ("Off", OutputLevel::Off),
    (
        "Peak",
        OutputLevel::Peak {
            dbfs: level::DEFAULT_PEAK_DBFS,
        },
    ),
    (
        "Loudness",
        OutputLevel::Lufs {
            lufs: level::DEFAULT_LUFS,
        },
    ),
];

fn same_kind(a: OutputLevel, b: OutputLevel) -> bool {
    std::mem::discriminant(&a) == std::mem::discriminant(&b)
}

impl LevelView {
    pub fn show(&mut self, ui: &mut egui::Ui, shared: &Shared, pad: usize) {
        let (serial, clip, mut setting) = shared.store.with(|b| {
            let p = &b.pads[pad];
            (p.serial, p.clip.clone(), p.level)
        });
        ui.horizontal(|ui| {
            let play = ui
                .add_enabled(clip.is_some(), egui::Button::new("Play"))
                .on_hover_text("Play the pad once through the plugin's output");
            if play.clicked() {
                shared.audition(pad);
            }
            if ui
                .button("Stop playback")
                .on_hover_text("Stop what the editor plays (pads and variations)")
                .clicked()
            {
                shared.stop_auditions();
            }
            ui.separator();
            let l = ui.label("Output level");
            let selected = CHOICES
                .iter()
                .find(|(_, c)| same_kind(*c, setting))
                .map_or("Off", |(name, _)| *name);
            egui::ComboBox::from_id_salt("output_level")
                .width(100.0)
                .selected_text(selected)
                .show_ui(ui, |ui| {
                    for (name, choice) in CHOICES {
                        if ui
                            .selectable_label(same_kind(choice, setting), name)
                            .clicked()
                            && !same_kind(choice, setting)
                        {
                            setting = choice;
                        }
                    }
                })
                .response
                .labelled_by(l.id)
                .on_hover_text(
                    "Levels the clip as it plays and exports; the generated clip is kept as it is",
                );
            match &mut setting {
                OutputLevel::Off => {}
                OutputLevel::Peak { dbfs } => {
                    ui.add(
                        egui::DragValue::new(dbfs)
                            .range(-30.0..=0.0)
                            .speed(0.1)
                            .suffix(" dBFS"),
                    );
                }
                OutputLevel::Lufs { lufs } => {
                    ui.add(
                        egui::DragValue::new(lufs)
                            .range(-40.0..=-6.0)
                            .speed(0.1)
                            .suffix(" LUFS"),
                    );
                }
            }
            if let Some(clip) = &clip {
                let key = (pad, serial, setting);
                let gain_db = match self.cached {
                    Some((k, g)) if k == key => g,
                    _ => {
                        let g = level::to_db(setting.gain(&clip.samples, clip.sample_rate));
                        self.cached = Some((key, g));
                        g
                    }
                };
                if setting != OutputLevel::Off {
                    // Fixed width: the readout changing must not move what follows.
                    ui.add_sized(
                        egui::vec2(90.0, 18.0),
                        egui::Label::new(format!("gain {gain_db:+.1} dB")),
                    );
                }
            }
        });
        shared.store.set_level(pad, setting.sanitized());
    }
}
