"""Regenerate bench/results/students-cpu.{json,md}: which distilled student the `cpu` search space tries first.

On the demo checkpoint (MiniLM-L6 fine-tuned on Rotten Tomatoes), each student shape is built by
`slimline compress` (prune, then `distill.kd` for a fixed number of steps from the checkpoint, on the
train split) with and without the hidden-state loss (`alpha_hidden`), then scored in torch fp32 on the
validation split (what the search screens on) and the test split (what the final bench reports), as a
paired drop against the teacher on the same examples. Latency is not measured here: the students differ
in shape, and bench/results/search-cpu.md times the chosen one side by side against the peers.

A student already in --work (built by an earlier invocation with the same recipe) is scored again, not
rebuilt; the results say which were built by this invocation. Distillation seconds come from each
student's manifest, so they are those of the invocation that built it.
Usage: python -m benchmarks.students_cpu [--work DIR] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from benchmarks import add_results_dir_argument
from slimline.benchmarking.report import write_results
from slimline.benchmarking.screening import ValidationScreen
from slimline.core.artifact import ModelDir
from slimline.core.data import DatasetSpec
from slimline.core.machine import library_versions, machine_info
from slimline.core.stats import paired_drop_pt
from slimline.pipeline.demo import ensure_demo_checkpoint
from slimline.pipeline.side_by_side import runner_spec
from slimline.profiles.schema import Profile, load_profile
from slimline.runtimes import make_runner

NAME = "students-cpu"
STEPS = 800
HALF_DEPTH = {"pass": "prune.layers", "with": {"keep_every": 2}}
THIRD_DEPTH = {"pass": "prune.layers", "with": {"keep_every": 3}}


def _width(heads: float, ffn: float) -> dict[str, Any]:
    return {"pass": "prune.structured", "with": {"heads_ratio": heads, "ffn_ratio": ffn, "importance": "magnitude"}}


def _kd(hidden: bool, steps: int = STEPS) -> dict[str, Any]:
    settings: dict[str, Any] = {"learning_rate": 0.0003, "max_steps": steps}
    return {"pass": "distill.kd", "with": {**settings, "alpha_hidden": 1.0} if hidden else settings}


#: Student name -> its recipe (the `cpu` space's shapes and distillation settings, fixed steps).
STUDENTS: dict[str, list[dict[str, Any]]] = {
    "3 of 6 layers, logits only": [HALF_DEPTH, _kd(False)],
    "3 of 6 layers, + hidden states": [HALF_DEPTH, _kd(True)],
    "3 of 6 layers, + hidden states, 480 steps": [HALF_DEPTH, _kd(True, 480)],
    "3 of 6 layers, heads/FFN -25%, + hidden states": [HALF_DEPTH, _width(0.25, 0.25), _kd(True)],
    "3 of 6 layers, heads -25% / FFN -50%, + hidden states": [HALF_DEPTH, _width(0.25, 0.5), _kd(True)],
    "2 of 6 layers, logits only": [THIRD_DEPTH, _kd(False)],
    "2 of 6 layers, + hidden states": [THIRD_DEPTH, _kd(True)],
}


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def build(checkpoint: Path, name: str, work: Path) -> tuple[Path, bool]:
    """The student's model directory, built with `slimline compress` unless an earlier run left it."""
    out = work / slug(name)
    if (out / "manifest.json").is_file():
        return out, False
    recipe = work / f"{slug(name)}.yaml"
    recipe.write_text(yaml.safe_dump(STUDENTS[name], sort_keys=False))
    subprocess.run(["slimline", "compress", "-q", "--checkpoint", str(checkpoint), "--recipe", str(recipe),
                    "--profile", "cpu", "--out", str(out), "--eval-data", "rotten-tomatoes"], check=True)
    return out, True


def correct(model_dir: Path, screen: ValidationScreen, profile: Profile) -> np.ndarray:
    """Per-example correctness on `screen`'s split of the model at `model_dir`, run by the torch runner as the
    search screens a trial (the profile's threads)."""
    model = ModelDir.open(model_dir)
    logits = screen.run_logits(make_runner(runner_spec("score", model, "torch", profile)).run)
    return logits.argmax(-1) == screen.labels


def distillation_facts(model_dir: Path) -> dict[str, Any]:
    facts = json.loads((model_dir / "manifest.json").read_text())["metadata"].get("distillation", {})
    return {key: facts.get(key) for key in ("steps", "seconds", "seconds_per_step", "student_layers", "stopped_by")}


def render(payload: dict[str, Any]) -> str:
    machine = payload["machine"]
    lines = [
        "# Distilled students for the `cpu` search space (one run)", "",
        f"- created: {payload['created']}; command: `{payload['command']}`",
        f"- machine: {machine.get('cpu_model')}, {machine.get('cpu_count')} cores, instruction sets: "
        f"{', '.join(machine.get('cpu_flags', []))}",
        "- teacher: the demo checkpoint (MiniLM-L6, 6 layers); students distilled on the train split, scored in torch "
        "fp32; drop vs the teacher on the same examples, paired SE",
        "- distill s: as the student's manifest records it, from the invocation that built it (a student built while "
        "other jobs shared the machine took longer); latency: bench/results/search-cpu.md", "",
        "| student | steps | distill s | validation % | val. drop pt ± SE | test % | test drop pt ± SE | built now |",
        "|---|---|---|---|---|---|---|---|",
        f"| teacher | - | - | {payload['teacher']['validation_pct']:.2f} | - | "
        f"{payload['teacher']['test_pct']:.2f} | - | - |",
    ]
    for row in payload["students"]:
        lines.append(f"| {row['name']} | {row['distillation']['steps']} | {row['distillation']['seconds']} | "
                     f"{row['validation_pct']:.2f} | "
                     f"{row['validation_drop_pt']:.2f} ± {row['validation_drop_se_pt']:.2f} | "
                     f"{row['test_pct']:.2f} | {row['test_drop_pt']:.2f} ± {row['test_drop_se_pt']:.2f} | "
                     f"{'yes' if row['built_now'] else 'no'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=Path("runs/bench-students-cpu"))
    parser.add_argument("--only", nargs="*", choices=sorted(STUDENTS), help="students to build and score")
    add_results_dir_argument(parser)
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    teacher = ensure_demo_checkpoint().path
    profile = load_profile("cpu")
    # each split tokenised once, with the teacher's tokenizer (the students carry the same one)
    screens = {split: ValidationScreen(DatasetSpec(source="rotten-tomatoes"), teacher,
                                       profile.shapes[0].sequence_length, profile.target.threads, split=split)
               for split in ("validation", "test")}
    reference = {split: correct(teacher, screen, profile) for split, screen in screens.items()}
    rows = []
    for name in args.only or STUDENTS:
        student, built_now = build(teacher, name, args.work)
        row: dict[str, Any] = {"name": name, "recipe": STUDENTS[name], "built_now": built_now,
                               "distillation": distillation_facts(student)}
        for split, base in reference.items():
            mine = correct(student, screens[split], profile)
            drop, se = paired_drop_pt(base, mine)
            row.update({f"{split}_pct": 100.0 * float(mine.mean()), f"{split}_drop_pt": drop,
                        f"{split}_drop_se_pt": se, f"{split}_examples": len(mine)})
        rows.append(row)
        print(json.dumps({k: row[k] for k in ("name", "validation_drop_pt", "test_drop_pt")}), flush=True)
    payload = {
        "schema_version": 1, "name": NAME, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python -m benchmarks.students_cpu", *(sys.argv[1:] if argv is None else argv)]),
        "machine": machine_info(), "versions": library_versions(),
        "teacher": {"path": str(teacher), **{f"{split}_pct": 100.0 * float(base.mean())
                                             for split, base in reference.items()}},
        "students": rows,
    }
    json_path, md_path = write_results(args.results_dir, NAME, json.dumps(payload, indent=2), render(payload))
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
