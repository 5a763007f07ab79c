//! Cue files for `ezaudio generate --batch`: one prompt per line, or CSV with the header
//! `prompt,seconds,seed[,negative,sampler,steps]` (any subset after `prompt`, in any order; empty
//! cells take the command-line values, so cue files written before `sampler`/`steps` existed
//! read as they did). Empty lines and
//! lines starting with `#` are skipped. CSV cells may be quoted (`"a dog, barking"`, `""` for a
//! quote inside).

use std::io::Read as _;
use std::path::Path;

use ezaudio_engine::model::sampler::Sampler;

use super::CliError;

/// Bigger cue files are almost certainly the wrong file.
pub const MAX_FILE_BYTES: u64 = 4 << 20;
pub const MAX_CUES: usize = 10_000;

#[derive(Debug, Clone, PartialEq)]
pub struct Cue {
    /// 1-based line in the file, for messages.
    pub line: usize,
    pub prompt: String,
    pub seconds: Option<f32>,
    pub seed: Option<u64>,
    pub negative: Option<String>,
    /// Optional `sampler` column (a name of `--sampler`); empty takes the command line's.
    pub sampler: Option<Sampler>,
    /// Optional `steps` column; empty takes the command line's.
    pub steps: Option<u32>,
}

pub fn read_cues(path: &Path) -> Result<Vec<Cue>, CliError> {
    let cannot = |e: std::io::Error| CliError::new(format!("cannot read {}: {e}", path.display()));
    if std::fs::metadata(path).map_err(cannot)?.is_dir() {
        return Err(CliError::new(format!(
            "{} is a folder, not a cue file",
            path.display()
        )));
    }
    // The limit bounds the read itself: devices and pipes (`/dev/zero`, `/dev/stdin`) report a
    // size of 0, so checking the metadata alone would read forever.
    let file = std::fs::File::open(path).map_err(cannot)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(CliError::new(format!(
            "{} is larger than {} MB; a cue file is limited to that (one prompt per line)",
            path.display(),
            MAX_FILE_BYTES >> 20
        )));
    }
    let text = String::from_utf8(bytes).map_err(|_| {
        CliError::new(format!(
            "{} is not UTF-8 text (expected one prompt per line)",
            path.display()
        ))
    })?;
    let cues = parse_cues(&text).map_err(|e| CliError::new(format!("{}: {e}", path.display())))?;
    if cues.is_empty() {
        return Err(CliError::new(format!(
            "{} has no prompts: write one prompt per line, or CSV with the header \
             `prompt,seconds,seed[,negative]` (empty lines and lines starting with # are skipped)",
            path.display()
        )));
    }
    if cues.len() > MAX_CUES {
        return Err(CliError::new(format!(
            "{} has {} cues; split it into files of at most {MAX_CUES}",
            path.display(),
            cues.len()
        )));
    }
    Ok(cues)
}

pub fn parse_cues(text: &str) -> Result<Vec<Cue>, String> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_start_matches('\u{feff}').trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
    let Some((first_no, first)) = lines.next() else {
        return Ok(Vec::new());
    };
    let header = split_csv(first).map(|cells| {
        cells
            .iter()
            .map(|c| c.trim().to_ascii_lowercase())
            .collect::<Vec<_>>()
    });
    let csv_columns = match header {
        Ok(cols) if cols.first().is_some_and(|c| c == "prompt") && cols.len() > 1 => Some(cols),
        _ => None,
    };
    if csv_columns.is_none() {
        // `prompt;seconds;seed` (a spreadsheet's export in many locales) would otherwise be read
        // as one prompt per line, header included.
        for sep in [';', '\t', '|'] {
            let cells: Vec<String> = first
                .split(sep)
                .map(|c| c.trim().trim_matches('"').to_ascii_lowercase())
                .collect();
            if cells.len() > 1 && cells[0] == "prompt" {
                return Err(format!(
                    "line {first_no} looks like a CSV header separated by {sep:?}; cue files use commas: \
                     prompt,seconds,seed[,negative]"
                ));
            }
        }
    }
    let Some(cols) = csv_columns else {
        // Plain list: every line is a prompt, commas and all.
        let all = std::iter::once((first_no, first)).chain(lines);
        return Ok(all
            .map(|(line, l)| Cue {
                line,
                prompt: l.to_string(),
                seconds: None,
                seed: None,
                negative: None,
                sampler: None,
                steps: None,
            })
            .collect());
    };
    for (i, c) in cols.iter().enumerate() {
        let known = ["prompt", "seconds", "seed", "negative", "sampler", "steps"];
        if !known.contains(&c.as_str()) {
            return Err(format!("line {first_no}: unknown CSV column '{c}' (expected prompt,seconds,seed[,negative,sampler,steps])"));
        }
        if cols[..i].contains(c) {
            return Err(format!("line {first_no}: column '{c}' appears twice"));
        }
    }
    let col = |name: &str| cols.iter().position(|c| c == name);
    let (c_seconds, c_seed, c_negative) = (col("seconds"), col("seed"), col("negative"));
    let (c_sampler, c_steps) = (col("sampler"), col("steps"));
    let mut cues = Vec::new();
    for (line, l) in lines {
        let cells = split_csv(l).map_err(|e| format!("line {line}: {e}"))?;
        if cells.len() > cols.len() {
            return Err(format!(
                "line {line}: {} cells but the header has {} columns (quote prompts that contain commas)",
                cells.len(),
                cols.len()
            ));
        }
        let cell = |c: Option<usize>| {
            c.and_then(|i| cells.get(i))
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
        };
        let seconds = cell(c_seconds)
            .map(|s| {
                s.parse::<f32>()
                    .map_err(|_| format!("line {line}: seconds '{s}' is not a number"))
            })
            .transpose()?;
        let seed = cell(c_seed)
            .map(|s| {
                s.parse::<u64>()
                    .map_err(|_| format!("line {line}: seed '{s}' is not a whole number >= 0"))
            })
            .transpose()?;
        let sampler = cell(c_sampler)
            .map(|s| {
                s.parse::<Sampler>().map_err(|_| {
                    format!(
                        "line {line}: sampler '{s}' is not one of {}",
                        Sampler::NAMES.join(", ")
                    )
                })
            })
            .transpose()?;
        let steps = cell(c_steps)
            .map(|s| {
                s.parse::<u32>()
                    .map_err(|_| format!("line {line}: steps '{s}' is not a whole number"))
            })
            .transpose()?;
        let prompt = cells
            .first()
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        if prompt.is_empty() {
            return Err(format!("line {line}: the prompt is empty"));
        }
        cues.push(Cue {
            line,
            prompt,
            seconds,
            seed,
            negative: cell(c_negative).map(str::to_string),
            sampler,
            steps,
        });
    }
    Ok(cues)
}

/// Splits one CSV record (RFC 4180 quoting, no line breaks inside cells).
fn split_csv(line: &str) -> Result<Vec<String>, String> {
    let mut cells = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut in_quotes = false;
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        match (c, in_quotes) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            ('"', true) => in_quotes = false,
            ('"', false) if cur.trim().is_empty() && !was_quoted => {
                cur.clear();
                in_quotes = true;
                was_quoted = true;
            }
            (',', false) => {
                cells.push(std::mem::take(&mut cur));
                was_quoted = false;
            }
            (c, _) => cur.push(c),
        }
    }
    if in_quotes {
        return Err("unterminated quote".into());
    }
    cells.push(cur);
    Ok(cells)
}

/// A file-name-safe slug of a prompt: lowercase ASCII words joined by `-`, at most ~40 chars.
pub fn slug(prompt: &str) -> String {
    let mut out = String::new();
    for word in prompt
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        if out.len() + word.len() + 1 > 40 && !out.is_empty() {
            break;
        }
        if !out.is_empty() {
            out.push('-');
        }
        out.extend(word.chars().take(40).map(|c| c.to_ascii_lowercase()));
    }
    if out.is_empty() {
        "clip".into()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_skip_comments_and_blanks() {
        let cues =
            parse_cues("# foley\n\na dog barking, far away\n  rain on a tin roof  \n").unwrap();
        let prompts: Vec<_> = cues.iter().map(|c| (c.line, c.prompt.as_str())).collect();
        assert_eq!(
            prompts,
            vec![(3, "a dog barking, far away"), (4, "rain on a tin roof")]
        );
    }

    #[test]
    fn csv_with_quotes_and_defaults() {
        let text = "prompt,seconds,seed,negative\n\"a dog, barking\",2.5,7,\"low quality\"\nrain,,,\n\"say \"\"hi\"\"\",1,,\n";
        let cues = parse_cues(text).unwrap();
        assert_eq!(cues.len(), 3);
        assert_eq!(
            (cues[0].prompt.as_str(), cues[0].seconds, cues[0].seed),
            ("a dog, barking", Some(2.5), Some(7))
        );
        assert_eq!(cues[0].negative.as_deref(), Some("low quality"));
        assert_eq!(
            (cues[1].seconds, cues[1].seed, cues[1].negative.clone()),
            (None, None, None)
        );
        assert_eq!(cues[2].prompt, "say \"hi\"");
        assert!(parse_cues("prompt,seconds\ndog,abc\n")
            .unwrap_err()
            .contains("line 2"));
        assert!(parse_cues("prompt,seconds\na,b,c\n")
            .unwrap_err()
            .contains("quote"));
        assert!(parse_cues("prompt,colour\n")
            .unwrap_err()
            .contains("unknown CSV column"));
        for header in [
            "prompt;seconds;seed",
            "\"Prompt\";seconds",
            "prompt\tseconds",
        ] {
            let e = parse_cues(&format!("{header}\ndog;1;2\n")).unwrap_err();
            assert!(e.contains("line 1 looks like a CSV header"), "{e}");
        }
    }

    #[test]
    fn csv_may_name_the_sampler_and_steps() {
        let text = "prompt,sampler,steps\ndraft,dpm++2m,10\nfinal,,\n";
        let cues = parse_cues(text).unwrap();
        assert_eq!(
            (cues[0].sampler, cues[0].steps),
            (Some(Sampler::DpmPp2m), Some(10))
        );
        assert_eq!((cues[1].sampler, cues[1].steps), (None, None));
        let bad = parse_cues("prompt,sampler\ndog,euler\n").unwrap_err();
        assert!(bad.contains("line 2") && bad.contains("unipc"), "{bad}");
        assert!(parse_cues("prompt,steps\ndog,-3\n")
            .unwrap_err()
            .contains("steps"));
    }

    #[test]
    fn slugs() {
        assert_eq!(
            slug("A dog barking in the distance!"),
            "a-dog-barking-in-the-distance"
        );
        assert_eq!(slug("日本"), "clip");
        assert!(slug(&"word ".repeat(50)).len() <= 40);
    }
}
