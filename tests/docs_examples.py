"""The examples of README.md and docs/*.md, found and run: the machinery behind tests/e2e/test_docs_examples.py.

Every fenced block in bash/sh/shell/console or python is an example and runs; yaml and json blocks are parsed
(and validated as a profile, recipe, space or input spec when marked). A block is marked by the HTML comment
on the line right before its fence, directives separated by `;`:

    <!-- docs-test: needs-demo -->            runs only with --slow (builds or reuses the real demo checkpoint)
    <!-- docs-test: needs-gpu -->             runs only where torch sees a CUDA device
    <!-- docs-test: slow -->                  runs only with --slow (a tiny model, but tens of seconds)
    <!-- docs-test: setup -->                 the README's set-up commands: checked to be the ones CI runs
    <!-- docs-test: file NAME -->             the block's text is written to NAME in the sandbox (then used)
    <!-- docs-test: profile | recipe | space | input-spec | profile-fragment -->   validated as that
    <!-- docs-test: expect TEXT -->           TEXT must appear in what the example printed (repeatable)
    <!-- docs-test: exit N -->                the last slimline command of the block exits N
    <!-- docs-test: benchmark -->             `python -m benchmarks.NAME` lines (minutes to hours each): every
                                              script named must exist and answer `--help`

Examples run in a sandbox directory per document, in document order (running one runs the earlier ones of its
document first), holding tiny models under the names the docs use: `my-model/` (a 2-layer BERT classifier
saved by save_pretrained), `reviews.csv` (text,label), `mypkg/nets.py` + `net.safetensors` + `images/` (a small
CNN and an image folder), `my-onnx/model.onnx` (that CNN exported, without a manifest), `my-llm/` + `corpus.txt`
(a tiny Llama and some text), `my-adapter/` (a LoRA adapter on `base-model/`, a copy of my-model). Shipped
profiles are swapped for copies with a short measurement (warm-up 1, at least 5 iterations, at most 5 s): the
same targets, recipes and budgets, so the commands, files and verdict kinds the
docs describe are what the test sees; only the timing is shorter (a verdict may differ from a full run's).
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL, PYTHON, YAML, JSON = "shell", "python", "yaml", "json"
LANGUAGES = {"bash": SHELL, "sh": SHELL, "shell": SHELL, "console": SHELL, "python": PYTHON, "py": PYTHON,
             "yaml": YAML, "yml": YAML, "json": JSON}
FENCE = re.compile(r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)
MARKER = re.compile(r"<!--\s*docs-test:\s*(?P<directives>.*?)\s*-->")
#: Commands that end in a verdict: exit 1 is a budget the tiny model did not meet, not a broken example.
VERDICT_COMMANDS = {"run", "bench", "search", "demo"}
FAST_MEASUREMENT = {"warmup_iters": 1, "min_iters": 5, "min_time_s": 0.0, "max_time_s": 5.0, "decode_tokens": 6,
                    "eval_max_samples": 8}
FLAGS = {"needs-demo", "needs-gpu", "slow", "setup", "profile", "recipe", "space", "input-spec", "profile-fragment",
         "benchmark"}


@dataclass
class Example:
    document: Path
    index: int  # among the document's examples
    line: int
    kind: str
    body: str
    flags: set[str] = field(default_factory=set)
    expects: list[str] = field(default_factory=list)
    file: str | None = None
    exit: int | None = None

    @property
    def id(self) -> str:
        return f"{self.document.relative_to(REPO)}:{self.line}"


def _directives(text: str, example: Example) -> None:
    for directive in (d.strip() for d in text.split(";") if d.strip()):
        word, _, rest = directive.partition(" ")
        if word == "expect":
            example.expects.append(rest.strip())
        elif word == "file":
            example.file = rest.strip()
        elif word == "exit":
            example.exit = int(rest)
        elif word in FLAGS:
            example.flags.add(word)
        else:
            raise ValueError(f"{example.id}: unknown docs-test directive {directive!r}")


def examples(document: Path) -> list[Example]:
    text = document.read_text()
    found: list[Example] = []
    for match in FENCE.finditer(text):
        kind = LANGUAGES.get(match.group("lang").lower())
        if kind is None:
            continue
        before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        example = Example(document, len(found), text.count("\n", 0, match.start()) + 1, kind, match.group("body"))
        marker = MARKER.fullmatch(before.strip())
        if marker:
            _directives(marker.group("directives"), example)
        found.append(example)
    return found


def all_examples() -> list[Example]:
    return [example for document in DOCUMENTS for example in examples(document)]


# --- the sandbox -------------------------------------------------------------------------------------------

NETS_PY = '''\
"""A small image classifier: the factory `slimline run --model-factory mypkg.nets:build` imports."""

import torch
from torch import nn


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1),
                                      nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.classifier = nn.Linear(16, 3)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(pixels).flatten(1))


def build() -> nn.Module:
    return Net()
'''


def fast_profiles(directory: Path) -> Path:
    """Every shipped profile, with a short measurement (see the module docstring)."""
    from slimline.profiles.schema import PROFILES_DIR

    directory.mkdir(parents=True, exist_ok=True)
    for path in sorted(PROFILES_DIR.glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        data["measurement"] = {**(data.get("measurement") or {}), **FAST_MEASUREMENT}
        (directory / path.name).write_text(yaml.safe_dump(data, sort_keys=False))
    return directory


def populate(root: Path) -> None:
    """The files the docs' examples name, built from configs with seeded random weights."""
    import random
    import shutil

    import torch
    from conftest import WORDS, make_tiny_bert, make_tiny_llama
    from peft_adapter import make_lora_adapter
    from plain_modules import write_image_folder

    make_tiny_bert(root / "my-model", initializer_range=0.2)
    rng = random.Random(0)
    rows = ["text,label"] + [f"{' '.join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))},"
                             f"{rng.choice(['neg', 'pos'])}" for _ in range(120)]
    (root / "reviews.csv").write_text("\n".join(rows) + "\n")
    (root / "mypkg").mkdir()
    (root / "mypkg" / "__init__.py").write_text("")
    (root / "mypkg" / "nets.py").write_text(NETS_PY)
    sys.path.insert(0, str(root))
    try:
        import mypkg.nets  # type: ignore[import-not-found]
        from safetensors.torch import save_file

        torch.manual_seed(0)
        net = mypkg.nets.build().eval()
        save_file(net.state_dict(), str(root / "net.safetensors"))
        (root / "my-onnx").mkdir()
        torch.onnx.export(net, (torch.zeros(1, 3, 32, 32),), str(root / "my-onnx" / "model.onnx"),
                          input_names=["pixels"], output_names=["logits"], dynamo=False,
                          dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}})
    finally:
        sys.path.remove(str(root))
        sys.modules.pop("mypkg.nets", None)
        sys.modules.pop("mypkg", None)
    write_image_folder(root / "images", classes=("cat", "dog", "fish"), per_class=20, size=32)
    make_tiny_llama(root / "my-llm")
    (root / "corpus.txt").write_text(" ".join(rng.choice(WORDS) for _ in range(600)) + "\n")
    make_lora_adapter(root / "my-model", root / "my-adapter")
    shutil.copytree(root / "my-model", root / "base-model")


SHIM = """#!{python}
import sys
sys.path.insert(0, {tests!r})
from docs_examples import run_slimline
sys.exit(run_slimline(sys.argv[1:]))
"""


def run_slimline(argv: list[str]) -> int:
    """The `slimline` command inside the sandbox: the real CLI, with shipped profiles read from the fast copies,
    each call and its exit code appended to $DOCS_TEST_LOG."""
    import slimline.profiles.schema as schema
    from slimline.cli.main import main

    schema.PROFILES_DIR = Path(os.environ["DOCS_TEST_PROFILES"])
    code = 2
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse: usage errors, --help, --version
        code = exit_.code if isinstance(exit_.code, int) else 0 if exit_.code is None else 2
    finally:
        with open(os.environ["DOCS_TEST_LOG"], "a") as log:
            log.write(json.dumps({"argv": argv, "rc": code}) + "\n")
    command = subcommand(argv)
    if code == 1 and command in VERDICT_COMMANDS and os.environ.get("DOCS_TEST_VERDICT_OK"):
        return 0  # the log keeps the real code (checked by the test); the example's later lines still run
    return code


def install_shim(root: Path) -> Path:
    bin_dir = root / ".bin"
    bin_dir.mkdir(exist_ok=True)
    shim = bin_dir / "slimline"
    shim.write_text(SHIM.format(python=sys.executable, tests=str(REPO / "tests")))
    shim.chmod(0o755)
    return bin_dir


def subcommand(argv: list[str]) -> str:
    """The command of a `slimline` call: the first word that is not an option (nor --log-level's value)."""
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word == "--log-level":
            skip = True
        elif not word.startswith("-"):
            return word
    return ""


def expected_code(argv: list[str], stated: int | None, last: bool) -> set[int]:
    if stated is not None and last:
        return {stated}
    command = subcommand(argv)
    return {0, 1} if command in VERDICT_COMMANDS else {0}


def read_log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
