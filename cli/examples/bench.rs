//! Stand-alone benchmark runner (the CLI's `ezaudio bench` calls the same `bench::run`):
//!
//! ```sh
//! CARGO_TARGET_DIR=/work/target-perf cargo run --release -p ezaudio-cli --example bench -- \
//!     --part dit --shape l --runs 3 --warmup 1 --dtype f32 --threads 2
//! ```
//! `--part` and `--shape` take comma lists (`--part dit,t5,vae --shape l,xl`); one JSON object
//! per line is printed per measured case.

use ezaudio_cli::bench::{run, BenchOptions, Part, Shape};
use ezaudio_engine::runtime::parse_dtype;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut parts = vec![Part::Dit];
    let mut shapes = vec![Shape::L];
    let mut base = BenchOptions::default();
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--part" => {
                parts = value()?
                    .split(',')
                    .map(Part::parse)
                    .collect::<Result<_, _>>()?
            }
            "--shape" => {
                shapes = value()?
                    .split(',')
                    .map(Shape::parse)
                    .collect::<Result<_, _>>()?
            }
            "--runs" => base.runs = value()?.parse()?,
            "--warmup" => base.warmup = value()?.parse()?,
            "--steps" => base.steps = value()?.parse()?,
            "--threads" => base.threads = Some(value()?.parse()?),
            "--dtype" => base.dtype = parse_dtype(&value()?)?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    for &shape in &shapes {
        for &part in &parts {
            let opts = BenchOptions {
                shape,
                part,
                ..base.clone()
            };
            for result in run(&opts)? {
                println!("{result}");
            }
        }
    }
    Ok(())
}
