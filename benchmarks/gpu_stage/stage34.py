"""The GPU stage of issue 34, for the day a GPU is lent: one script, one 10-minute call (after
the calls that bring the rest of the payload), results under $OUT.

On the GPU machine, call K of N (`make_payload.py` prints them; each carries
`.devdata/gpu34/partK`): `python3 benchmarks/gpu_stage/stage34.py --part K`. Calls before the
last only store their wheels in /tmp/gpu34 (the machine must stay warm between the calls);
the last installs them all (`pip --target`, first on PYTHONPATH) and runs, each section in its
own process with its own time limit:

1. `env`: GPU, driver, versions, onnxruntime providers (env.txt);
2. `segment`: `bench_infer.py` on a generated 8192^2 2-band scene with the ViT-Tiny depth-12
   FPN segmenter on CUDA (bf16, prefetch thread): end to end against the model alone
   (segment.json; target: model-only / end-to-end >= 0.8);
3. `step`: `step_graphs.py`, the ViT-Tiny fine-tuning step eager, compiled, and as one CUDA
   graph, at batch 128 (step.json; target <= 10 ms);
4. `ort`: `ort_cuda.py`, onnxruntime's CUDA provider against PyTorch (ort.json);
5. `pytest`: the whole suite on CUDA with the time left (pytest.log, and pytest_summary.txt:
   the failures grouped by their error).
summary.json holds each section's exit code, seconds and main numbers; stage.log its log.

Rehearsal on a CPU: `python benchmarks/gpu_stage/stage34.py --dry-run --out DIR` (no payload;
the same sections at toy sizes on the CPU, and `pytest --collect-only` of the whole suite).
Only the standard library here: the sections import the project.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STORE = Path("/tmp/gpu34")
PAYLOAD = ROOT / ".devdata" / "gpu34"


def sections(dry: bool, out: Path) -> list[tuple[str, list[str], int]]:
    """(name, command, seconds allowed); pytest's limit is set from the time left."""
    py = sys.executable
    stage, work = "benchmarks/gpu_stage", str(out / "_work")
    if dry:
        seg = ["--sizes", "512", "--depth", "1", "--channels", "16", "--device", "cpu", "--batch-size", "4"]
        return [
            ("env", [py, "-c", ENV_PY], 60),
            ("segment", [py, "benchmarks/bench_infer.py", *seg, "--workdir", work], 240),
            ("step", [py, f"{stage}/step_graphs.py", "--dry-run", "--json", str(out / "step.json")], 240),
            (
                "ort",
                [py, f"{stage}/ort_cuda.py", "--dry-run", "--workdir", work, "--json", str(out / "ort.json")],
                240,
            ),
            ("pytest", [py, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "tests"], 0),
        ]
    seg = ["--sizes", "8192", "--depth", "12", "--device", "cuda", "--batch-size", "64"]
    gpu = "nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv"
    tests = ["-q", "-n", "12", "-p", "no:cacheprovider", "--timeout", "120", "-rfE", "tests"]
    return [
        ("env", ["bash", "-c", f"{gpu}; nproc; {py} -c '{ENV_PY}'"], 30),
        ("segment", [py, "benchmarks/bench_infer.py", *seg, "--workdir", str(STORE / "bi")], 170),
        ("step", [py, f"{stage}/step_graphs.py", "--device", "cuda", "--json", str(out / "step.json")], 170),
        ("ort", [py, f"{stage}/ort_cuda.py", "--json", str(out / "ort.json")], 50),
        ("pytest", [py, "-m", "pytest", *tests], 0),
    ]


ENV_PY = (
    "import torch, timm, rasterio, onnxruntime as o; "
    "print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'timm', timm.__version__, "
    "'rasterio', rasterio.__version__, 'ort', o.__version__, o.get_available_providers())"
)


def store_part(part: int) -> tuple[int, list[str]]:
    """Keep call `part`'s wheels in STORE; (number of parts, the parts not stored yet)."""
    src = PAYLOAD / f"part{part}"
    manifest = json.loads((src / "parts.json").read_text())
    (STORE / "whl").mkdir(parents=True, exist_ok=True)
    for whl in src.glob("*.whl"):
        shutil.copy2(whl, STORE / "whl" / whl.name)
    (STORE / f"part{part}.ok").write_text("ok")
    n = len(manifest["parts"])
    return n, [str(k) for k in range(1, n + 1) if not (STORE / f"part{k}.ok").exists()]


def install() -> str:
    """pip --target of every stored wheel; the PYTHONPATH that puts them first."""
    site = STORE / "site"
    wheels = sorted(str(p) for p in (STORE / "whl").glob("*.whl"))
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile"]
    subprocess.run([*cmd, "--no-cache-dir", "--upgrade", "--target", str(site), *wheels], check=True)
    return f"{site}{os.pathsep}{ROOT}"


def pytest_summary(log: str) -> str:
    """The last lines of a pytest run and its failures grouped by their error text."""
    fails = re.findall(r"^(?:FAILED|ERROR) (\S+)(?: - (.*))?$", log, re.M)
    groups = Counter(re.sub(r"\d+(\.\d+)?", "N", (err or "?").strip())[:150] for _, err in fails)
    lines = [ln for ln in log.strip().splitlines() if ln.strip()][-1:]
    lines += [f"{n:4d} x {err}" for err, n in groups.most_common()]
    lines += ["", *(f"{t} - {(e or '').strip()[:200]}" for t, e in fails)]
    return "\n".join(lines) + "\n"


def numbers(name: str, text: str, out: Path) -> dict:
    """The main numbers of a section's output."""
    if name == "segment":  # bench_infer prints its JSON row on stderr, then a table
        rows = [json.loads(ln) for ln in text.splitlines() if ln.startswith("{")]
        if rows:
            r = rows[-1]
            r["model_over_end_to_end"] = round(r["model_only_s"] / r["end_to_end_s"], 3)
            (out / "segment.json").write_text(json.dumps(rows, indent=1))
            return r
    if name in ("step", "ort") and (out / f"{name}.json").exists():
        return json.loads((out / f"{name}.json").read_text())
    return {}


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = (out / "stage.log").open("a")

    def say(msg: str) -> None:
        line = f"[{time.perf_counter() - t0:5.0f}s] {msg}"
        print(line, flush=True)
        log.write(line + "\n")
        log.flush()

    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    if not args.dry_run:
        n, missing = store_part(args.part)
        if args.part < n:
            say(f"part {args.part} of {n} stored in {STORE}; next: --part {args.part + 1}")
            return 0
        if missing:
            say(f"parts {', '.join(missing)} are not on this machine (it was given back between the calls): "
                "run every call again from --part 1")  # fmt: skip
            return 1
        env["PYTHONPATH"] = install()
        say("payload installed")
    summary = {}
    for name, cmd, limit in sections(args.dry_run, out):
        if args.only and name not in args.only:
            continue
        left = args.budget - (time.perf_counter() - t0)
        limit = int(left - 10) if limit == 0 else min(limit, int(left - 10))
        if limit < 20:
            summary[name] = {"rc": None, "why": f"not run: {left:.0f} s left"}
            say(f"{name}: not run, {left:.0f} s left")
            continue
        say(f"{name}: {' '.join(cmd)[:160]} (limit {limit} s)")
        t = time.perf_counter()
        try:
            res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=limit)
            rc, text = res.returncode, res.stdout + res.stderr
        except subprocess.TimeoutExpired as e:
            rc = "timeout"
            text = (e.stdout or b"").decode(errors="replace") + (e.stderr or b"").decode(errors="replace")
        summary[name] = {"rc": rc, "seconds": round(time.perf_counter() - t, 1), **numbers(name, text, out)}
        if name == "env":
            (out / "env.txt").write_text(text)
        if name == "pytest":
            (out / "pytest.log").write_text(text[-4_000_000:])
            (out / "pytest_summary.txt").write_text(pytest_summary(text))
        last = text.strip().splitlines()[-1][:200] if text.strip() else ""
        say(f"{name}: rc {rc} in {summary[name]['seconds']} s; {last}")
    shutil.rmtree(out / "_work", ignore_errors=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    say(f"done; {', '.join(p.name for p in sorted(out.iterdir()))}")
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", type=int, default=1, help="which call of the payload this is (1..N)")
    ap.add_argument("--out", default=os.environ.get("OUT"), help="results folder (default $OUT)")
    ap.add_argument("--budget", type=float, default=560, help="seconds for the whole stage")
    ap.add_argument("--only", nargs="+", help="run only these sections")
    ap.add_argument("--dry-run", action="store_true", help="rehearse on the CPU: toy sizes, no payload")
    args = ap.parse_args()
    if not args.out:
        sys.exit("Error: no results folder: set $OUT or pass --out DIR")
    sys.exit(run(args))


if __name__ == "__main__":
    main()
