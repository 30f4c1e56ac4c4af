#!/usr/bin/env bash
# symdiff against the peers of ../shared/anchors/mlp (Keras/TensorFlow, JAX, PyTorch, NumPy),
# run back to back on the same machine and the same MNIST files, printing time ratios.
#
#   bench/compare.sh                 # creates target/bench-venv on first use (~3 GB, minutes)
#
# Environment: VENV (virtualenv to use or create), ANCHORS (the peer scripts), DATA (MNIST IDX
# files, raw or gzip), OUT (where the JSON results go), SKIP (peers to leave out, e.g. "keras").
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ANCHORS=${ANCHORS:-$ROOT/../shared/anchors/mlp}
DATA=${DATA:-$ROOT/../shared/data/mnist}
VENV=${VENV:-$ROOT/target/bench-venv}
OUT=${OUT:-$ROOT/target/compare}
SKIP=${SKIP:-}
mkdir -p "$OUT"

[ -f "$ANCHORS/jax_mlp.py" ] || { echo "error: no peer scripts in $ANCHORS (set ANCHORS)" >&2; exit 2; }
[ -e "$DATA/train-images-idx3-ubyte.gz" ] || [ -e "$DATA/train-images-idx3-ubyte" ] \
  || { echo "error: no MNIST files in $DATA (set DATA; 'symdiff data fetch mnist --dir DIR' gets them)" >&2; exit 2; }

if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV (tensorflow-cpu, jax, torch from PyPI)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q tensorflow-cpu==2.21.0 jax==0.10.2 jaxlib==0.10.2 torch==2.15.0
fi
PY="$VENV/bin/python"

echo "== building symdiff"
cargo build --release --locked -q

echo "== symdiff bench examples/mnist.model"
target/release/symdiff bench examples/mnist.model --data "$DATA" --json > "$OUT/symdiff.json"
cat "$OUT/symdiff.json"

peer() {  # peer NAME SCRIPT: one fit (5 epochs, batch 32, validation) and one step benchmark
  local name=$1 script=$2
  case " $SKIP " in *" $name "*) return 0;; esac
  echo "== $name: fit"
  MNIST_DIR="$DATA" "$PY" "$ANCHORS/$script" --data "$DATA" --json "$OUT/$name-fit.json" > "$OUT/$name-fit.log" 2>&1 \
    || { echo "   failed; see $OUT/$name-fit.log"; return 0; }
  echo "== $name: steps"
  MNIST_DIR="$DATA" "$PY" "$ANCHORS/$script" --mode step --data "$DATA" --json "$OUT/$name-step.json" \
    > "$OUT/$name-step.log" 2>&1 || echo "   failed; see $OUT/$name-step.log"
}
peer jax jax_mlp.py
peer numpy numpy_mlp.py
peer torch torch_mlp.py
peer keras keras_seed.py

"$PY" - "$OUT" <<'PYEOF'
import json, os, sys
out = sys.argv[1]
def load(name):
    p = os.path.join(out, name)
    return json.load(open(p)) if os.path.exists(p) else None
s = load("symdiff.json")
rows = [("symdiff (compiled step)", s["fit_seconds"], s["step32_us"], s["step256_us"],
         s["compile_ms"] / 1e3, s["test_accuracy"], s.get("peak_rss_mib"))]
for name, label in [("jax", "JAX, jitted step"), ("numpy", "NumPy + OpenBLAS"),
                    ("torch", "PyTorch eager"), ("keras", "Keras / TensorFlow")]:
    fit, step = load(f"{name}-fit.json"), load(f"{name}-step.json")
    if fit is None:
        continue
    st = (step or {}).get("step", {})
    us = lambda b: st[b]["median"] * 1e6 if b in st else float("nan")
    s32 = st.get("32", {})
    # compile: JAX's ahead-of-time lower + compile; others' first step (no compiler, or lazy)
    first = (s32["aot_lower_s"] + s32["aot_compile_s"]) if "aot_compile_s" in s32 else s32.get("first_call_s", float("nan"))
    rows.append((label, fit["fit_s"], us("32"), us("256"), first, fit["test_acc"], fit.get("peak_rss_mib")))
print()
print(f"{'':26} {'5-epoch fit':>12} {'step@32':>10} {'step@256':>10} {'compile*':>9} {'test acc':>9} {'peak RSS':>9}   fit ratio  step@32 ratio")
for label, fit, s32, s256, comp, acc, rss in rows:
    comp = f"{comp:>8.3f}s" if comp == comp else f"{'-':>9}"
    print(f"{label:26} {fit:>11.2f}s {s32:>8.0f}µs {s256:>8.0f}µs {comp} {acc*100:>8.2f}% {rss or float('nan'):>7.0f}MiB"
          f"   {fit / rows[0][1]:>8.1f}x  {s32 / rows[0][2]:>12.1f}x")
print("\nratios: peer time / symdiff time in this run (higher means symdiff is faster)")
print("* compile: symdiff's step compilation; JAX's ahead-of-time lower + compile of the step;")
print("  PyTorch and Keras: their first step (no separate compile); NumPy: none")
PYEOF
