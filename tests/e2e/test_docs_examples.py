"""Every example in README.md and docs/*.md runs, on tiny models, as written: a wrong claim fails here.

How examples are found, marked and run, and what the sandbox holds: tests/docs_examples.py. Shell examples
go through the real `slimline` CLI (a shim that only swaps the shipped profiles for short-measurement copies
and logs each call's exit code); Python examples run in-process. A verdict command (run, bench, search, demo)
may exit 1 on a tiny random model's budgets; every other command must exit 0, unless the example states its
exit code (`<!-- docs-test: exit N -->`).
"""

from __future__ import annotations

import contextlib
import inspect
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from docs_examples import (
    DOCUMENTS,
    JSON,
    PYTHON,
    REPO,
    SHELL,
    YAML,
    Example,
    all_examples,
    examples,
    expected_code,
    fast_profiles,
    install_shim,
    populate,
    read_log,
)

import slimline

EXAMPLES = all_examples()
SETUP_COMMANDS = ["python3 -m venv .venv && . .venv/bin/activate && scripts/install.sh && slimline demo",
                  "python3 -m venv .venv && . .venv/bin/activate && scripts/install.sh && pytest"]
README_MAX_LINES = 250


def _marks(example: Example) -> list[Any]:
    marks = []
    if "needs-demo" in example.flags or "slow" in example.flags:
        marks.append(pytest.mark.slow)
    if "needs-gpu" in example.flags:
        marks.append(pytest.mark.gpu)
    return marks


def _enabled(example: Example, config: pytest.Config) -> bool:
    """Whether this run of the suite runs the example (the same rules as the marks above)."""
    slow = config.getoption("--slow") or "slow" in (config.getoption("-m") or "")
    if ("needs-demo" in example.flags or "slow" in example.flags) and not slow:
        return False
    if "needs-gpu" in example.flags:
        try:
            import torch

            return bool(torch.cuda.is_available())
        except ImportError:
            return False
    return "setup" not in example.flags


class Sandboxes:
    """One directory per document, copied from one populated template; examples run in document order."""

    def __init__(self, root: Path, config: pytest.Config) -> None:
        self.root, self.config = root, config
        self.template = root / "template"
        self.template.mkdir()
        populate(self.template)
        self.profiles = fast_profiles(root / "fast-profiles")
        self.done: dict[Path, set[int]] = {}
        self.namespaces: dict[Path, dict[str, Any]] = {}

    def directory(self, document: Path) -> Path:
        path = self.root / document.stem
        if not path.exists():
            shutil.copytree(self.template, path, symlinks=True)
            install_shim(path)
        return path

    def run(self, example: Example) -> None:
        done = self.done.setdefault(example.document, set())
        for earlier in examples(example.document)[:example.index]:
            if earlier.index not in done and _enabled(earlier, self.config):
                self._run_one(earlier)
                done.add(earlier.index)
        self._run_one(example)
        done.add(example.index)

    def _run_one(self, example: Example) -> None:
        where = self.directory(example.document)
        if example.file:
            (where / example.file).parent.mkdir(parents=True, exist_ok=True)
            (where / example.file).write_text(example.body)
        if "benchmark" in example.flags:
            _check_benchmarks(example)
        elif example.kind == SHELL:
            self._shell(example, where)
        elif example.kind == PYTHON:
            self._python(example, where)
        elif example.kind == YAML:
            _check_yaml(example)
        elif example.kind == JSON:
            import json

            json.loads(example.body)

    def _environment(self, example: Example, where: Path) -> dict[str, str]:
        env = {**os.environ, "PATH": f"{where / '.bin'}:{os.environ.get('PATH', '')}", "COLUMNS": "200",
               "DOCS_TEST_PROFILES": str(self.profiles), "DOCS_TEST_LOG": str(where / ".slimline-calls.jsonl"),
               "SLIMLINE_HISTORY": str(where / "history.sqlite")}
        if "needs-demo" not in example.flags:  # the demo checkpoint lives in the user's cache
            env["SLIMLINE_CACHE_DIR"] = str(where / ".cache")
        return env

    def _shell(self, example: Example, where: Path) -> None:
        log = where / ".slimline-calls.jsonl"
        log.unlink(missing_ok=True)
        script = where / ".example.sh"
        script.write_text(example.body)
        completed = subprocess.run(["bash", "-e", "-o", "pipefail", str(script)], cwd=where, capture_output=True,
                                   text=True, env={**self._environment(example, where), "DOCS_TEST_VERDICT_OK": "1"},
                                   timeout=900, check=False)
        output = completed.stdout + completed.stderr
        calls = read_log(log)
        assert calls, f"{example.id}: the example ran no slimline command\n{output[-3000:]}"
        for number, call in enumerate(calls):
            wanted = expected_code(call["argv"], example.exit, number == len(calls) - 1)
            assert call["rc"] in wanted, f"{example.id}: `slimline {' '.join(call['argv'])}` exited {call['rc']}, " \
                                         f"expected {sorted(wanted)}\n{output[-4000:]}"
        ended = {0, example.exit or 0}  # an example that states its last command's exit code ends with it
        assert completed.returncode in ended, f"{example.id}: the example failed (exit {completed.returncode})\n" \
                                              f"{output[-4000:]}"
        for text in example.expects:
            assert text in output, f"{example.id}: expected {text!r} in the output\n{output[-4000:]}"

    def _python(self, example: Example, where: Path) -> None:
        import slimline.profiles.schema as schema

        namespace = self.namespaces.setdefault(example.document, {"__name__": "__docs_example__"})
        environment = self._environment(example, where)
        saved_env, saved_cwd, saved_dir = dict(os.environ), Path.cwd(), schema.PROFILES_DIR
        printed = io.StringIO()
        try:
            os.environ.update({k: v for k, v in environment.items() if k.startswith(("SLIMLINE_", "DOCS_"))})
            os.chdir(where)
            sys.path.insert(0, str(where))
            schema.PROFILES_DIR = self.profiles
            with contextlib.redirect_stdout(printed):
                exec(compile(example.body, example.id, "exec"), namespace)
        finally:
            schema.PROFILES_DIR = saved_dir
            sys.path.remove(str(where))
            os.chdir(saved_cwd)
            os.environ.clear()
            os.environ.update(saved_env)
        for text in example.expects:
            assert text in printed.getvalue(), f"{example.id}: expected {text!r} in\n{printed.getvalue()[-3000:]}"


def _check_benchmarks(example: Example) -> None:
    """Benchmark scripts run for minutes to hours: each one named must exist and parse its arguments."""
    names = re.findall(r"^python -m benchmarks\.(\w+)", example.body, re.M)
    assert names, f"{example.id}: a benchmark block names no `python -m benchmarks.NAME`"
    import runpy

    saved = sys.argv
    sys.path.insert(0, str(REPO))
    try:
        for name in names:
            sys.argv = [f"benchmarks.{name}", "--help"]
            with contextlib.redirect_stdout(io.StringIO()), pytest.raises(SystemExit) as exited:
                runpy.run_module(f"benchmarks.{name}", run_name="__main__", alter_sys=False)
            assert exited.value.code in (0, None), f"{example.id}: benchmarks.{name} --help exited {exited.value.code}"
    finally:
        sys.argv = saved
        sys.path.remove(str(REPO))


def _check_yaml(example: Example) -> None:
    from slimline.compression.recipe import parse_recipe, profile_recipe
    from slimline.compression.search_space_files import parse_search_space
    from slimline.formats.torch_module import load_input_spec
    from slimline.profiles.schema import load_profile, parse_profile

    data = yaml.safe_load(example.body)
    if "profile" in example.flags:
        profile_recipe(parse_profile(data, example.id))
    if "profile-fragment" in example.flags:
        base = load_profile("cpu").model_dump(mode="json", exclude_none=True)
        parse_profile({**base, **data}, example.id)
    if "recipe" in example.flags:
        parse_recipe(data, example.id)
    if "space" in example.flags:
        parse_search_space(data, example.id)
    if "input-spec" in example.flags:
        load_input_spec(data)


@pytest.fixture(scope="session")
def sandboxes(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Sandboxes:
    return Sandboxes(tmp_path_factory.mktemp("docs-examples"), request.config)


RUNNABLE = [e for e in EXAMPLES if "setup" not in e.flags]


@pytest.mark.parametrize("example", [pytest.param(e, id=e.id, marks=_marks(e)) for e in RUNNABLE])
def test_the_example_runs_as_written(example: Example, sandboxes: Sandboxes) -> None:
    sandboxes.run(example)


def test_the_readme_is_short_and_its_set_up_commands_are_the_ones_ci_runs() -> None:
    readme = REPO / "README.md"
    assert len(readme.read_text().splitlines()) <= README_MAX_LINES
    setup = [e.body.strip() for e in examples(readme) if "setup" in e.flags]
    assert setup == SETUP_COMMANDS
    ci = (REPO / ".ci" / "run").read_text()
    assert "scripts/install.sh" in ci and "\npytest\n" in ci and "slimline demo" in ci


def test_every_document_has_examples_and_the_readme_links_to_every_document() -> None:
    readme = (REPO / "README.md").read_text()
    for document in DOCUMENTS[1:]:
        assert f"docs/{document.name}" in readme, f"README.md does not link docs/{document.name}"
    counted = {d.name: len(examples(d)) for d in DOCUMENTS}
    assert sum(counted.values()) >= 40, counted


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def test_every_relative_link_and_anchor_resolves() -> None:
    for document in DOCUMENTS:
        text = re.sub(r"```.*?```", "", document.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (document.parent / path).resolve() if path else document
            assert linked.exists(), f"{document.name}: link to missing {target}"
            if anchor and linked.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", linked.read_text(), re.M)
                assert anchor in {_slug(h) for h in headings}, f"{document.name}: no heading #{anchor} in {path}"


def test_every_slimline_function_the_docs_call_exists_with_a_real_signature() -> None:
    called = set()
    for document in DOCUMENTS:
        called |= set(re.findall(r"\bslimline\.([a-z_]+)\(", document.read_text()))
    assert called, "the docs call no slimline function"
    for name in sorted(called):
        assert name in slimline.__all__, f"the docs call slimline.{name}(), which is not public"
        function = getattr(slimline.api, name)
        assert function.__doc__ and inspect.signature(function).parameters, name
