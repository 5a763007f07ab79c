#!/usr/bin/env bash
# One prepared GPU run (issue #13): device info, parity of every part on CUDA against the
# fixtures, `ezaudio bench` at L and XL in f32/f16/bf16, and a PyTorch timing at the same shapes.
#
#   scripts/gpu-check.sh [--smoke]        # --smoke: about one minute; default: at most ~8 minutes
#
# Needs what `scripts/build-cuda.sh --tests` leaves in target-cuda/out (carry that folder to the
# GPU machine): ezaudio, parity (the engine's parity tests built with cuda) and fixtures/.
# Writes to $OUT (default ./gpu-check-out): results.jsonl (one JSON object per line), table.md,
# and one .log per part. Every part runs under its own time limit and a failure is recorded, never
# fatal; a global deadline skips what would not fit (recorded as skipped).
set -uo pipefail
cd "$(dirname "$0")/.."

smoke=0
[[ "${1:-}" == "--smoke" ]] && smoke=1
out=${OUT:-$PWD/gpu-check-out}
mkdir -p "$out"
bin=${EZAUDIO_CUDA_OUT:-$PWD/target-cuda/out}
jsonl="$out/results.jsonl"
: >"$jsonl"
start=$(date +%s)
budget=$((smoke ? 70 : 470))

elapsed() { echo $(($(date +%s) - start)); }
# record KIND NAME STATUS SECONDS [EXTRA-JSON-OBJECT]
record() {
  python3 - "$@" >>"$jsonl" <<'EOF'
import json, sys
kind, name, status, secs = sys.argv[1:5]
row = {"kind": kind, "name": name, "status": status, "seconds": float(secs)}
if len(sys.argv) > 5 and sys.argv[5]:
    try:
        row.update(json.loads(sys.argv[5]))
    except ValueError:
        row["detail"] = sys.argv[5]
print(json.dumps(row))
EOF
}
# part NAME LIMIT_S COMMAND...: runs one part under `timeout`, logs it, records its status.
part() {
  local name=$1 limit=$2
  shift 2
  local left=$((budget - $(elapsed)))
  if ((left < 5)); then
    record part "$name" skipped 0 '{"why": "global deadline"}'
    return 1
  fi
  ((limit > left)) && limit=$left
  local t0=$(date +%s) rc
  timeout --kill-after=5 "$limit" "$@" >"$out/$name.log" 2>&1
  rc=$?
  local secs=$(($(date +%s) - t0))
  case $rc in
    0) record part "$name" ok "$secs" ;;
    124 | 137) record part "$name" timeout "$secs" "{\"limit_s\": $limit}" ;;
    *) record part "$name" failed "$secs" "{\"rc\": $rc, \"tail\": $(tail -n 5 "$out/$name.log" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))')}" ;;
  esac
  return $rc
}

# --- CUDA libraries: the driver is the system's; cuBLAS/cuRAND come from PyTorch's wheels ------
if python3 -c 'import nvidia' 2>/dev/null; then
  libs=$(python3 -c 'import nvidia, os, glob
roots = list(nvidia.__path__)
print(":".join(sorted({os.path.dirname(p) for r in roots for p in glob.glob(os.path.join(r, "**", "lib*.so*"), recursive=True)})))')
  export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

# --- 1. device ---------------------------------------------------------------------------------
info=$(nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>&1 | head -n 1)
record device nvidia-smi "$([[ $? == 0 ]] && echo ok || echo failed)" 0 \
  "$(python3 -c 'import json,sys; f=[x.strip() for x in sys.argv[1].split(",")]; k=["name","driver","memory","compute_cap"]; print(json.dumps(dict(zip(k,f)) if len(f)==4 else {"detail": sys.argv[1]}))' "$info")"
if tinfo=$(python3 -c 'import json, torch; print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}))' 2>/dev/null); then
  record device torch ok 0 "$tinfo"
else
  record device torch missing 0 '{"why": "python3 cannot import torch"}'
fi
if [[ ! -x "$bin/ezaudio" ]]; then
  record part setup failed 0 "{\"why\": \"no $bin/ezaudio: run scripts/build-cuda.sh --tests and carry target-cuda/out\"}"
fi
# The binary's own view: which device `auto` picks and why (plain words, never a panic).
part probe 60 "$bin/ezaudio" bench --device cuda --part vae --shape l --runs 1 --warmup 0
cp "$out/probe.log" "$out/probe.txt" 2>/dev/null

# --- 2. parity on CUDA ------------------------------------------------------------------------
fixtures=${EZAUDIO_FIXTURES:-}
for d in "$bin/fixtures" shared/fixtures/ezaudio-ref ../shared/fixtures/ezaudio-ref; do
  [[ -z "$fixtures" && -f "$d/README.md" ]] && fixtures=$(cd "$d" && pwd)
done
if [[ -x "$bin/parity" && -n "$fixtures" ]]; then
  # Smoke: the single forwards only (DiT, T5, VAE); full: every parity test, samplers included.
  filter=()
  ((smoke)) && filter=(dit::dit_forward t5:: vae::vae_decode)
  export EZAUDIO_TEST_DEVICE=cuda EZAUDIO_FIXTURES="$fixtures"
  part parity $((smoke ? 40 : 200)) "$bin/parity" --test-threads 1 "${filter[@]}"
  python3 - "$out/parity.log" >>"$jsonl" <<'EOF'
import json, re, sys
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r"^test (\S+) \.\.\. (ok|FAILED|ignored)", line)
    if m:
        print(json.dumps({"kind": "parity", "name": m.group(1), "status": m.group(2).lower(), "device": "cuda"}))
EOF
else
  record part parity skipped 0 "{\"why\": \"no parity binary in $bin or no fixture folder (EZAUDIO_FIXTURES)\"}"
fi

# --- 3. ezaudio bench ---------------------------------------------------------------------------
# Most important first, so a deadline cuts the least useful: the XL bf16 job is the target.
if ((smoke)); then
  cases=("l dit bf16" "l vae bf16")
else
  cases=("xl job bf16" "xl dit bf16" "l dit bf16" "xl dit f16" "l dit f16" "xl dit f32" "l dit f32"
    "l vae bf16" "l vae f16" "l vae f32" "xl t5 bf16" "l t5 bf16" "xl t5 f32" "l t5 f32"
    "xl t5 f16" "l t5 f16" "l job bf16" "xl job f32")
fi
for c in "${cases[@]}"; do
  read -r shape what dtype <<<"$c"
  extra=()
  [[ $what == job ]] && extra=(--steps "$((smoke ? 2 : 50))")
  name="bench-$shape-$what-$dtype"
  if part "$name" $((smoke ? 25 : 45)) "$bin/ezaudio" bench --device cuda --shape "$shape" --part "$what" \
    --dtype "$dtype" --runs "$((smoke ? 2 : 5))" --warmup "$((smoke ? 1 : 2))" "${extra[@]}"; then
    grep '^{' "$out/$name.log" | python3 -c 'import json,sys
for l in sys.stdin:
    r = json.loads(l); r = {"kind": "bench", "impl": "ezaudio", **r}; print(json.dumps(r))' >>"$jsonl"
  fi
done

# --- 4. PyTorch at the same shapes ----------------------------------------------------------
torch_args=(--shapes "$([[ $smoke == 1 ]] && echo l || echo l,xl)" --dtypes "$([[ $smoke == 1 ]] && echo bf16 || echo f32,f16,bf16)"
  --runs "$((smoke ? 2 : 5))")
if python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
  part torch $((smoke ? 20 : 120)) python3 scripts/gpu-check/torch_shapes.py "${torch_args[@]}"
  grep '^{' "$out/torch.log" >>"$jsonl"
else
  record part torch skipped 0 '{"why": "no PyTorch with CUDA here"}'
fi
if [[ -z "${EZAUDIO_REF:-}" ]]; then
  record part torch-official skipped 0 '{"why": "the official EzAudio code is not vendored; set EZAUDIO_REF to a checkout to add it (not scripted yet)"}'
fi

# --- 5. the table ---------------------------------------------------------------------------
python3 - "$jsonl" >"$out/table.md" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| kind | name | status | median s | detail |\n|---|---|---|---|---|")
for r in rows:
    if r["kind"] == "bench":
        name = f'{r.get("impl")} {r.get("part")} {r.get("shape")} {r.get("dtype")}'
        detail = f'device {r.get("device", "")}, gpu mem {r.get("gpu_mem_after_mib")} MiB'
        print(f'| bench | {name} | ok | {r.get("median_s", 0):.4f} | {detail} |')
    elif r["kind"] == "parity" and r["status"] == "ok":
        continue
    else:
        detail = {k: v for k, v in r.items() if k not in ("kind", "name", "status", "seconds")}
        print(f'| {r["kind"]} | {r["name"]} | {r["status"]} | | {json.dumps(detail)[:160]} |')
n_ok = sum(1 for r in rows if r["kind"] == "parity" and r["status"] == "ok")
n_all = sum(1 for r in rows if r["kind"] == "parity")
print(f"\nparity on CUDA: {n_ok} of {n_all} tests passed")
EOF
cat "$out/table.md"
echo "gpu-check: done in $(elapsed) s; results in $out"
