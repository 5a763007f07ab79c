//! `cargo xtask`: nice-plug's bundler, plus `bundle-test` for the test suite's own bundles.
//!
//! `cargo xtask bundle-test <package> [cargo args]` builds the plugin like `bundle` does but leaves
//! the result in `<target>/test-bundles/` under a name of its own (`EzAudio-test.clap`,
//! `EzAudio-test.vst3`), and leaves whatever `<target>/bundled/` held before untouched. Test
//! bundles are debug builds that abort on any allocation in `process()`: a user who installs
//! `target/bundled/` after running the suite must still get the release plugin they built.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The bundle name from bundler.toml; the test copies carry this plus [`TEST_SUFFIX`].
const BUNDLE_NAME: &str = "EzAudio";
/// Not on macOS, where the library's name is also written in the bundle's Info.plist.
const TEST_SUFFIX: &str = if cfg!(target_os = "macos") {
    ""
} else {
    "-test"
};

fn main() -> nice_plug_xtask::Result<()> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("bundle-test") => bundle_test(args.collect()),
        _ => nice_plug_xtask::main(),
    }
}

fn bundle_test(args: Vec<String>) -> nice_plug_xtask::Result<()> {
    nice_plug_xtask::chdir_workspace_root()?;
    let target = target_dir();
    let bundled = target.join("bundled");
    let kept = target.join("bundled.kept-by-bundle-test");
    let tests = target.join("test-bundles");

    // Put the user's bundles aside, bundle, move the new ones out, put the user's back.
    move_ours(&bundled, &kept, "")?;
    let result = nice_plug_xtask::main_with_args(
        "cargo xtask",
        std::iter::once("bundle".to_string()).chain(args),
    );
    let moved = move_ours(&bundled, &tests, TEST_SUFFIX);
    move_ours(&kept, &bundled, "")?;
    let _ = fs::remove_dir(&kept);
    result?;
    moved?;
    eprintln!("Test bundles are in {}", tests.display());
    Ok(())
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"))
}

/// Moves `EzAudio.clap` and `EzAudio.vst3` (whichever exist) from `from` to `to`, renamed to
/// `EzAudio<suffix>.*`. Inside a VST3 bundle the library must carry the bundle's name.
fn move_ours(from: &Path, to: &Path, suffix: &str) -> io::Result<()> {
    for ext in ["clap", "vst3"] {
        let src = from.join(format!("{BUNDLE_NAME}.{ext}"));
        if fs::symlink_metadata(&src).is_err() {
            continue;
        }
        fs::create_dir_all(to)?;
        let dst = to.join(format!("{BUNDLE_NAME}{suffix}.{ext}"));
        remove_any(&dst)?;
        fs::rename(&src, &dst)?;
        if ext == "vst3" && !suffix.is_empty() {
            rename_vst3_libraries(&dst, suffix)?;
        }
    }
    Ok(())
}

fn rename_vst3_libraries(bundle: &Path, suffix: &str) -> io::Result<()> {
    let contents = bundle.join("Contents");
    for arch in fs::read_dir(&contents)? {
        let arch = arch?.path();
        if !arch.is_dir() {
            continue;
        }
        for lib in fs::read_dir(&arch)? {
            let lib = lib?.path();
            let Some(name) = lib.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if let Some(rest) = name.strip_prefix(BUNDLE_NAME) {
                if !rest.starts_with(suffix) {
                    fs::rename(&lib, arch.join(format!("{BUNDLE_NAME}{suffix}{rest}")))?;
                }
            }
        }
    }
    Ok(())
}

fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(_) => Ok(()),
    }
}
