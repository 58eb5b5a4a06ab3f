"""Hostile and clumsy input through the installed console script: nothing of the user's is lost, memory
stays bounded, one writer per output, SIGTERM cleans up, bad data is found before any stage runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, run_cli, slimline_script

FAST_PROFILE = REPO / "tests" / "fixtures" / "fast-cpu.yaml"
#: "Billion laughs": nine levels of nine aliases each, 9^9 leaves from a file of a few hundred bytes.
BOMB = "a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9]\n" + "".join(
    f"{chr(97 + i)}: &{chr(97 + i)} [{', '.join([f'*{chr(96 + i)}'] * 9)}]\n" for i in range(1, 9))


def _user_folder(path: Path) -> dict[str, bytes]:
    path.mkdir(parents=True)
    (path / "thesis.tex").write_text("years of work")
    (path / "data").mkdir()
    (path / "data" / "results.csv").write_text("a,b\n1,2\n")
    return _snapshot(path)


def _snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _slow_profile(tmp_path: Path, min_time_s: float) -> Path:
    data = yaml.safe_load(FAST_PROFILE.read_text())
    data["measurement"].update(min_time_s=min_time_s, max_time_s=min_time_s + 30, min_iters=5)
    path = tmp_path / "slow.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# --- defect 1: --out is never someone else's folder ----------------------------------------------


@pytest.fixture(scope="module")
def exported_bert(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("exported") / "onnx"
    completed = run_cli("export", "--checkpoint", str(tiny_bert), "--out", str(out))
    assert completed.returncode == 0, completed.stderr
    return out


@pytest.mark.parametrize("command", ["export", "compress", "run", "bench"])
def test_a_command_refuses_an_out_holding_the_users_files(command: str, tiny_bert: Path, exported_bert: Path,
                                                          tmp_path: Path) -> None:
    out = tmp_path / "mine"
    before = _user_folder(out)
    args = {"export": ["--checkpoint", str(tiny_bert)],
            "compress": ["--model", str(exported_bert), "--recipe", "int4-weight-only"],
            "run": ["--checkpoint", str(tiny_bert), "--profile", str(FAST_PROFILE)],
            "bench": ["--model", str(exported_bert), "--profile", str(FAST_PROFILE)]}[command]
    completed = run_cli(command, *args, "--out", str(out))
    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert "not a slimline" in " ".join(completed.stderr.split()) and "--force" in completed.stderr
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_export_refuses_to_replace_a_regular_file_at_out(tiny_bert: Path, tmp_path: Path) -> None:
    out = tmp_path / "notes.txt"
    out.write_text("keep me")
    completed = run_cli("export", "--checkpoint", str(tiny_bert), "--out", str(out))
    assert completed.returncode == 2 and "is a file" in completed.stderr
    assert out.read_text() == "keep me"


def test_export_reruns_into_its_own_output_and_force_writes_beside_a_foreign_ones_files(tiny_bert: Path,
                                                                                       tmp_path: Path) -> None:
    out = tmp_path / "onnx"
    assert run_cli("export", "--checkpoint", str(tiny_bert), "--out", str(out)).returncode == 0
    assert run_cli("export", "--checkpoint", str(tiny_bert), "--out", str(out)).returncode == 0  # its own: fine
    foreign = tmp_path / "foreign"
    before = _user_folder(foreign)
    completed = run_cli("export", "--checkpoint", str(tiny_bert), "--out", str(foreign), "--force")
    assert completed.returncode == 0, completed.stderr
    assert (foreign / "manifest.json").is_file()
    assert {k: v for k, v in _snapshot(foreign).items() if k in before} == before  # --force never deletes them
    rerun = run_cli("export", "--checkpoint", str(tiny_bert), "--out", str(foreign))  # slimline's now: no flag
    assert rerun.returncode == 0, rerun.stderr
    assert {k: v for k, v in _snapshot(foreign).items() if k in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign", "onnx"]  # no lock or work dirs left


def test_force_never_replaces_the_home_directory(tiny_bert: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    before = _user_folder(home)
    completed = run_cli("export", "--checkpoint", str(tiny_bert), "--out", str(home), "--force",
                        env={"HOME": str(home)})
    assert completed.returncode == 2 and "home directory" in completed.stderr
    assert _snapshot(home) == before


# --- defect 2: YAML bombs and oversized files -------------------------------------------------------


def _max_rss_mb_of(argv: list[str], tmp_path: Path) -> tuple[int, float, str]:
    """Exit code, peak RSS (MB) and stderr of the console script's main() run in a fresh interpreter."""
    # VmHWM, not ru_maxrss: ru_maxrss survives exec, so a child of the (large) pytest process starts with
    # the parent's peak; the new address space's high-water mark starts at zero.
    code = ("import re, sys\nfrom pathlib import Path\nfrom slimline.cli.main import main\n"
            f"rc = main({argv!r})\n"
            "hwm = re.search(r'VmHWM:\\s+(\\d+)', Path('/proc/self/status').read_text()).group(1)\n"
            "print(rc, int(hwm) / 1024, file=sys.stderr)\n")
    python = Path(slimline_script()).with_name("python")
    completed = subprocess.run([str(python), "-c", code], cwd=tmp_path, capture_output=True, text=True,
                               timeout=120, check=False)
    rc, rss = completed.stderr.strip().splitlines()[-1].split()
    return int(rc), float(rss), completed.stderr


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads the peak RSS from /proc")
@pytest.mark.parametrize("kind", ["recipes", "profiles"])
def test_a_yaml_alias_bomb_is_refused_quickly_with_bounded_memory(kind: str, tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)
    assert len(BOMB) < 600
    started = time.monotonic()
    rc, rss_mb, stderr = _max_rss_mb_of([kind, "validate", str(bomb)], tmp_path)
    assert rc == 2, stderr
    assert "YAML nodes" in stderr and len(stderr) < 2000
    assert rss_mb < 200 and time.monotonic() - started < 60


def test_a_bomb_inside_a_run_is_refused_before_any_work(tiny_bert: Path, tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)
    completed = run_cli("run", "--checkpoint", str(tiny_bert), "--recipe", str(bomb), "--out", str(tmp_path / "o"))
    assert completed.returncode == 2 and "YAML nodes" in completed.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads the peak RSS from /proc")
def test_an_oversized_recipe_is_refused_unread(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("- pass: quantize.ort-int8-dynamic\n" + "# padding\n" * 300_000)
    rc, rss_mb, stderr = _max_rss_mb_of(["recipes", "validate", str(big)], tmp_path)
    assert rc == 2 and "may be at most" in stderr
    assert rss_mb < 200


def test_a_hostile_value_is_never_formatted_whole_into_a_message(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("- pass: " + "x" * 200_000 + "\n")
    completed = run_cli("recipes", "validate", str(recipe))
    assert completed.returncode == 2 and "unknown pass" in completed.stderr
    assert len(completed.stderr) < 3000


# --- defect 5: one writer per --out ------------------------------------------------------------------


@pytest.mark.slow  # tens of seconds of full runs; CI's slow step runs it
def test_a_second_run_into_the_same_out_is_refused_naming_the_first(tiny_bert: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    profile = _slow_profile(tmp_path, 4.0)
    first = subprocess.Popen([slimline_script(), "run", "--checkpoint", str(tiny_bert), "--profile", str(profile),
                              "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / ".slimline.lock").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        second = run_cli("run", "--checkpoint", str(tiny_bert), "--profile", str(profile), "--out", str(out))
        assert second.returncode == 2, second.stdout + second.stderr
        assert f"pid {first.pid}" in " ".join(second.stderr.split())
    finally:
        stdout, stderr = first.communicate(timeout=300)
    assert first.returncode in (0, 1), stdout + stderr
    report = json.loads((out / "report.json").read_text())
    quantize_dirs = [p for p in (out / "stages").iterdir() if "quantize" in p.name]
    assert len(quantize_dirs) == 1
    for stage in report["stages"]:
        manifest = Path(stage["directory"]) / "manifest.json"
        import hashlib

        assert hashlib.sha256(manifest.read_bytes()).hexdigest() == stage["manifest_sha256"]


# --- defect 6: SIGTERM -------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow  # tens of seconds of full runs; CI's slow step runs it
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the benchmark worker")
def test_sigterm_during_a_run_stops_the_worker_cleans_up_and_the_next_run_sweeps(tiny_bert: Path,
                                                                                 tmp_path: Path) -> None:
    out, scratch = tmp_path / "out", tmp_path / "tmp"
    scratch.mkdir()
    profile = _slow_profile(tmp_path, 60.0)
    env = {**os.environ, "TMPDIR": str(scratch), "COLUMNS": "200"}
    process = subprocess.Popen([slimline_script(), "run", "--checkpoint", str(tiny_bert), "--profile", str(profile),
                                "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env)
    deadline, workers = time.monotonic() + 180, []
    while time.monotonic() < deadline and not workers:
        workers = [c for c in _children(process.pid)
                   if b"slimline.benchmarking.worker" in (Path("/proc") / str(c) / "cmdline").read_bytes()]
        time.sleep(0.2)
    assert workers, "the benchmark worker never started"
    time.sleep(2.0)  # let it load the model and start timing
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "terminated (SIGTERM)" in " ".join(stderr.split())
    time.sleep(0.5)
    assert not any(_alive(pid) for pid in workers), "the benchmark worker was orphaned"
    leaked = [p.name for p in scratch.iterdir() if p.name.startswith("slimline-")]  # libraries keep caches there
    assert leaked == [], "temporary directories leaked"
    # what a `kill -9` leaves: its lock file naming its session, and that session's temporaries; the next
    # writer removes exactly those (a look-alike of the user's stays: slimline.core.locks)
    (out / ".slimline.lock").write_text(json.dumps({"pid": 1, "host": "h", "started": 0, "command": "slimline",
                                                    "session": "deadbeef0001"}))
    stale = out / "stages" / ".09-quantize.x-abc.slimline-tmp-deadbeef0001.abcdef"
    stale.mkdir(parents=True)
    look_alike = out / "stages" / ".09-quantize.x-deadbeef.tmp-abc"
    look_alike.mkdir()
    rerun = run_cli("run", "--checkpoint", str(tiny_bert), "--profile", str(FAST_PROFILE), "--out", str(out))
    assert rerun.returncode in (0, 1), rerun.stderr
    assert not stale.exists() and look_alike.is_dir()


# --- defect 7: bad --eval-data is found in the pre-flight ---------------------------------------------


@pytest.mark.parametrize(("content", "message"), [
    (b"words,label\nthe film,pos\n", "no column"),
    (b"text,label\n", "no examples"),
    (b"text,label\n" + b"the film is \xff\xfe bad,neg\n" * 20, "not UTF-8"),
    (b"text,label\n" + b"the film,pos\nbad plot,meh\n" * 20, "does not know"),
])
def test_bad_eval_data_is_refused_before_any_stage_and_out_is_not_created(content: bytes, message: str,
                                                                          tiny_bert: Path, tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    data.write_bytes(content)
    out = tmp_path / "out"
    completed = run_cli("run", "--checkpoint", str(tiny_bert), "--profile", str(FAST_PROFILE), "--out", str(out),
                        "--eval-data", str(data))
    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert message in " ".join(completed.stderr.split())
    assert not out.exists()


def test_a_missing_eval_file_does_not_create_out(tiny_bert: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    completed = run_cli("run", "--checkpoint", str(tiny_bert), "--profile", str(FAST_PROFILE), "--out", str(out),
                        "--eval-data", str(tmp_path / "nope.csv"))
    assert completed.returncode == 2 and "does not exist" in completed.stderr
    assert not out.exists()


@pytest.mark.slow  # tens of seconds of full runs; CI's slow step runs it
def test_integer_labels_matching_id2label_are_accepted(tiny_bert: Path, labelled_csv: Path, tmp_path: Path) -> None:
    """The tiny model's id2label is {0: neg, 1: pos}: labels 0/1 mean the same as neg/pos."""
    as_ids = tmp_path / "ids.csv"
    as_ids.write_text(labelled_csv.read_text().replace(",neg\n", ",0\n").replace(",pos\n", ",1\n"))
    by_name = run_cli("run", "--checkpoint", str(tiny_bert), "--profile", str(FAST_PROFILE),
                      "--out", str(tmp_path / "names"), "--eval-data", str(labelled_csv))
    assert by_name.returncode in (0, 1), by_name.stderr
    by_id = run_cli("run", "--checkpoint", str(tiny_bert), "--profile", str(FAST_PROFILE),
                    "--out", str(tmp_path / "ids"), "--eval-data", str(as_ids))
    assert by_id.returncode in (0, 1), by_id.stderr
    names = json.loads((tmp_path / "names" / "report.json").read_text())
    ids = json.loads((tmp_path / "ids" / "report.json").read_text())
    assert ids["baseline"]["accuracy_pct"] == names["baseline"]["accuracy_pct"]
    assert ids["eval_data"]["examples_sha256"] == names["eval_data"]["examples_sha256"]


# --- defect 9: validation gaps ---------------------------------------------------------------------


@pytest.mark.parametrize(("change", "message"), [
    ({"recipe": [{"pass": "quantize.ort-int8-dynamik"}]}, "unknown pass"),
    ({"recipe": "no-such-recipe"}, "no recipe named"),
    ({"budgets": {}}, "no budgets"),
    ({"budgets": {"size_mb": {"max": -5}}}, "greater than or equal to 0"),
    ({"budgets": {"size_mb": {"max": float("nan")}}}, "finite number"),
])
def test_profiles_validate_refuses_what_a_run_would_trip_over(change: dict, message: str, tmp_path: Path) -> None:
    data = {**yaml.safe_load(FAST_PROFILE.read_text()), **change}
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(data))
    completed = run_cli("profiles", "validate", str(path))
    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert message in " ".join(completed.stderr.split())
