//! Which instruction-set tier the hand-written kernels may use on this CPU, decided once at
//! start-up from the CPU's features, and optionally restricted with `EZAUDIO_CPU` so that every
//! tier can be measured side by side on one machine:
//! `EZAUDIO_CPU=portable|avx2|avx512|avx512-bf16|amx|auto` (default `auto`: the best the CPU
//! and the operating system allow). A tier the CPU lacks is never chosen, whatever is asked.
//!
//! The f32 matrix products go through the `gemm` crate (candle's), which picks its own kernels
//! at run time (256-bit FMA on x86: it is built without its AVX-512 feature); this switch does
//! not reach it. The f32 Linear layers may use our packed AVX-512 kernel instead (`f32_gemm`, at
//! the avx512 tier and above, where it measures faster at load).

use std::sync::OnceLock;

/// Ordered: each tier includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tier {
    Portable,
    /// AVX2 + FMA (element-wise kernels).
    Avx2,
    /// AVX-512 F.
    Avx512,
    /// AVX512-BF16: `vdpbf16ps` for the bf16 Linear layers.
    Avx512Bf16,
    /// AMX-BF16 tiles for the bf16 Linear layers (Intel Sapphire Rapids and later).
    Amx,
}

impl Tier {
    pub const NAMES: [&'static str; 5] = ["portable", "avx2", "avx512", "avx512-bf16", "amx"];
    const ALL: [Tier; 5] = [
        Tier::Portable,
        Tier::Avx2,
        Tier::Avx512,
        Tier::Avx512Bf16,
        Tier::Amx,
    ];

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    pub fn parse(s: &str) -> Option<Tier> {
        let s = s.trim().to_ascii_lowercase();
        Self::NAMES
            .iter()
            .position(|n| *n == s)
            .map(|i| Self::ALL[i])
    }
}

/// What was decided, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuChoice {
    /// The tier the kernels use.
    pub tier: Tier,
    /// The best tier this CPU and OS support.
    pub supported: Tier,
    /// Set when `EZAUDIO_CPU` could not be honoured as written.
    pub note: Option<String>,
}

static CHOICE: OnceLock<CpuChoice> = OnceLock::new();

/// The tier in use (decided on first call).
pub fn tier() -> Tier {
    choice().tier
}

pub fn choice() -> &'static CpuChoice {
    CHOICE.get_or_init(|| {
        let supported = supported_tier();
        let asked = std::env::var("EZAUDIO_CPU").ok();
        decide(supported, asked.as_deref())
    })
}

/// `asked` (the `EZAUDIO_CPU` value) applied to what the machine supports.
pub fn decide(supported: Tier, asked: Option<&str>) -> CpuChoice {
    let mut note = None;
    let tier = match asked.map(str::trim) {
        None | Some("") | Some("auto") => supported,
        Some(a) => match Tier::parse(a) {
            Some(t) if t <= supported => t,
            Some(t) => {
                note = Some(format!(
                    "EZAUDIO_CPU={} is above what this CPU supports; using {}",
                    t.name(),
                    supported.name()
                ));
                supported
            }
            None => {
                note = Some(format!(
                    "EZAUDIO_CPU={a} is not one of auto, {}; using {}",
                    Tier::NAMES.join(", "),
                    supported.name()
                ));
                supported
            }
        },
    };
    CpuChoice {
        tier,
        supported,
        note,
    }
}

#[cfg(target_arch = "x86_64")]
fn supported_tier() -> Tier {
    use std::arch::is_x86_feature_detected as has;
    if !(has!("avx2") && has!("fma")) {
        return Tier::Portable;
    }
    if !has!("avx512f") {
        return Tier::Avx2;
    }
    if !has!("avx512bf16") {
        return Tier::Avx512;
    }
    if amx_bf16_in_cpuid() && request_amx_permission() {
        Tier::Amx
    } else {
        Tier::Avx512Bf16
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn supported_tier() -> Tier {
    Tier::Portable
}

/// CPUID leaf 7: AMX-BF16 (EDX bit 22) and AMX-TILE (EDX bit 24). (The standard library's
/// feature detection does not name AMX on stable Rust.)
#[cfg(target_arch = "x86_64")]
fn amx_bf16_in_cpuid() -> bool {
    // CPUID exists on every x86-64 CPU; leaf 7 is valid when the max leaf is >= 7.
    let max = std::arch::x86_64::__cpuid(0).eax;
    if max < 7 {
        return false;
    }
    let edx = std::arch::x86_64::__cpuid_count(7, 0).edx;
    edx & (1 << 22) != 0 && edx & (1 << 24) != 0
}

/// Linux keeps the AMX tile state off until a process asks for it
/// (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`); without that permission the first
/// tile instruction kills the process. A refusal (old kernel, seccomp) means no AMX.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request_amx_permission() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: a plain system call with integer arguments.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

/// Other systems: not enabled (Windows and macOS manage the tile state themselves, but this
/// path was only ever run on Linux).
#[cfg(all(target_arch = "x86_64", not(target_os = "linux")))]
fn request_amx_permission() -> bool {
    false
}

/// The CPU's name as the OS reports it (Linux: `/proc/cpuinfo`), for benchmark records.
pub fn model_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// The features that decide the tiers, as detected (for benchmark records).
pub fn features() -> Vec<&'static str> {
    let mut found = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        let named = [
            ("avx2", has!("avx2")),
            ("fma", has!("fma")),
            ("avx512f", has!("avx512f")),
            ("avx512bf16", has!("avx512bf16")),
            ("avx512fp16", has!("avx512fp16")),
            ("amx-bf16+tile", amx_bf16_in_cpuid()),
        ];
        found.extend(named.iter().filter(|(_, on)| *on).map(|(n, _)| *n));
    }
    found
}

/// Which kernel each kind of operation runs with the current tier (the f32 Linear choice is
/// measured on first use, see `f32_gemm::use_packed`).
pub fn kernels() -> Vec<(&'static str, String)> {
    let t = tier();
    let f32_linear = super::f32_gemm::choice();
    vec![
        (
            "linear_bf16",
            match t {
                Tier::Amx => "amx-bf16 tiles (tdpbf16ps)",
                Tier::Avx512Bf16 => "avx512-bf16 (vdpbf16ps)",
                Tier::Avx512 | Tier::Avx2 => "avx2+fma, bf16 weights widened to f32",
                Tier::Portable => "portable (scalar)",
            }
            .to_string(),
        ),
        (
            "linear_f32",
            if f32_linear.packed {
                format!(
                    "packed {} f32 ({})",
                    super::f32_gemm::packed_isa(),
                    f32_linear.why
                )
            } else {
                format!("gemm crate, fma kernels ({})", f32_linear.why)
            },
        ),
        (
            "matmul_f32",
            "gemm crate, fma kernels (attention, convolutions)".to_string(),
        ),
        (
            "elementwise",
            if t >= Tier::Avx2 {
                "avx2+fma"
            } else {
                "portable"
            }
            .to_string(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_switch_restricts_but_never_raises() {
        let d = |s, a| decide(s, a).tier;
        assert_eq!(d(Tier::Amx, None), Tier::Amx);
        assert_eq!(d(Tier::Amx, Some("auto")), Tier::Amx);
        assert_eq!(d(Tier::Amx, Some("avx2")), Tier::Avx2);
        assert_eq!(d(Tier::Amx, Some(" AVX512-BF16 ")), Tier::Avx512Bf16);
        assert_eq!(d(Tier::Avx2, Some("amx")), Tier::Avx2);
        assert!(decide(Tier::Avx2, Some("amx")).note.is_some());
        let odd = decide(Tier::Avx512, Some("sse9"));
        assert_eq!(odd.tier, Tier::Avx512);
        assert!(odd
            .note
            .unwrap()
            .contains("portable, avx2, avx512, avx512-bf16, amx"));
        for n in Tier::NAMES {
            assert_eq!(Tier::parse(n).map(Tier::name), Some(n));
        }
    }

    /// On a Linux machine whose CPU has AMX, the AMX kernel is the one that runs (unless the
    /// switch asks for less).
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    #[test]
    fn amx_runs_where_the_cpu_has_it() {
        if std::env::var_os("EZAUDIO_CPU").is_some() {
            return;
        }
        let has_amx = amx_bf16_in_cpuid() && std::arch::is_x86_feature_detected!("avx512bf16");
        assert_eq!(tier() == Tier::Amx, has_amx, "features: {:?}", features());
        if has_amx {
            let first = kernels().swap_remove(0);
            assert_eq!(
                first,
                ("linear_bf16", "amx-bf16 tiles (tdpbf16ps)".to_string())
            );
        }
    }

    #[test]
    fn the_chosen_tier_is_supported_here() {
        let c = choice();
        assert!(c.tier <= c.supported);
        assert!(!model_name().is_empty());
        assert_eq!(kernels().len(), 4);
    }
}
