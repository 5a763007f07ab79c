#!/usr/bin/env python3
"""Renders MIDI through the EzAudio VST3 in pedalboard (a JUCE-based VST3 host from PyPI).

Driven by tests/tests/pedalboard.rs, which writes the plugin state (nice-plug's JSON, the
VST3 component state) and checks the audio this script writes:

    pedalboard_render.py PLUGIN.vst3 STATE.json OUT.f32 --note KEY:SECONDS:VELOCITY ...
        [--rate 48000] [--seconds 1.0] [--buffer 512]

OUT.f32 is little-endian float32, channel after channel (left then right). The output
channel count and the plugin's reported buses go to stdout as one JSON line.
"""

import argparse
import json
import re
import sys

import numpy as np
import pedalboard

# JUCE's MemoryBlock::toBase64Encoding alphabet: "<size>.<chars>", 6 bits a char, taken from
# the data least significant bit first. JUCE wraps a VST3's component state in it.
JUCE_B64 = ".ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+"


def juce_base64(data: bytes) -> str:
    chars = []
    # 3 bytes are exactly 4 characters, least significant bits first.
    for i in range(0, len(data), 3):
        group = data[i : i + 3]
        v = int.from_bytes(group, "little")
        n = (len(group) * 8 + 5) // 6
        chars.extend(JUCE_B64[(v >> (6 * k)) & 63] for k in range(n))
    return f"{len(data)}.{''.join(chars)}"


def juce_vst3_state(component: bytes, template: bytes) -> bytes:
    """The blob pedalboard's raw_state expects: JUCE's "VC2!" + length + XML, taken from a
    state the plugin produced, with the component state replaced."""
    if template[:4] != b"VC2!":
        raise SystemExit(f"unexpected JUCE state header {template[:4]!r}")
    xml = template[8:].rstrip(b"\0").decode("utf-8")
    new = re.sub(
        r"<IComponent>.*?</IComponent>",
        lambda _: f"<IComponent>{juce_base64(component)}</IComponent>",
        xml,
        flags=re.S,
    )
    body = new.encode("utf-8") + b"\0"
    return b"VC2!" + len(body).to_bytes(4, "little") + body


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("plugin")
    ap.add_argument("state")
    ap.add_argument("out")
    ap.add_argument("--note", action="append", default=[], help="KEY:SECONDS:VELOCITY(0-127)")
    ap.add_argument("--rate", type=float, default=48000.0)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--buffer", type=int, default=512)
    args = ap.parse_args()

    plugin = pedalboard.load_plugin(args.plugin)
    if not plugin.is_instrument:
        raise SystemExit("EzAudio should load as an instrument")
    with open(args.state, "rb") as f:
        component = f.read()
    plugin.raw_state = juce_vst3_state(component, plugin.raw_state)

    midi = []
    for spec in args.note:
        key, at, vel = spec.split(":")
        midi.append((bytes([0x90, int(key), int(vel)]), float(at)))
    audio = plugin(
        midi,
        duration=args.seconds,
        sample_rate=args.rate,
        num_channels=2,
        buffer_size=args.buffer,
    )
    audio = np.asarray(audio, dtype="<f4")
    audio.tofile(args.out)
    print(json.dumps({"channels": int(audio.shape[0]), "frames": int(audio.shape[1])}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
