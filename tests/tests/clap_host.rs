//! The bundled CLAP plugin in a real host: load, instantiate, activate, process, deactivate.

use ezaudio_tests::{clap_bundle, Note, PluginUnderTest, PLUGIN_ID};

#[test]
fn bundle_exists_and_exports_the_instrument() {
    let bundle = clap_bundle();
    let ids = PluginUnderTest::descriptor_ids(&bundle).expect("factory");
    assert_eq!(ids, vec![PLUGIN_ID.to_string()]);
}

#[test]
fn declares_stereo_main_and_sixteen_stereo_stems() {
    let mut plugin = PluginUnderTest::load(&clap_bundle()).expect("load");
    let ports = plugin.output_ports();
    assert_eq!(ports.len(), 17, "main + 16 stems, got {ports:?}");
    assert!(
        ports.iter().all(|&c| c == 2),
        "every port stereo, got {ports:?}"
    );
}

#[test]
fn processes_at_two_rates_and_odd_block_sizes() {
    let mut plugin = PluginUnderTest::load(&clap_bundle()).expect("load");
    for rate in [44_100.0, 48_000.0] {
        for block in [1u32, 64, 512, 997] {
            let frames = 2_000;
            let notes = [Note::on(3, 36, 1.0), Note::off(1_500, 36)];
            let out = plugin
                .render(rate, block, frames, &notes)
                .unwrap_or_else(|e| panic!("{rate} Hz / {block}: {e}"));
            assert_eq!(out.len(), 17);
            for port in &out {
                for channel in port {
                    assert_eq!(channel.len(), frames as usize);
                    assert!(
                        channel.iter().all(|s| s.is_finite()),
                        "non-finite output at {rate} Hz / {block}"
                    );
                }
            }
        }
    }
}
