"""Deployment bundles: packaging a model or run directory, verification, safe archives, Triton configs.

One exported tiny BERT and one fast CLI run are shared by the module; every test that damages a bundle
works on its own copy.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest
from conftest import REPO, run_cli

from slimline.core.artifact import TensorSpec
from slimline.core.errors import EXIT_BAD_INPUT, BundleError
from slimline.profiles.schema import Profile, Shape, Target

FAST_PROFILE = REPO / "tests" / "fixtures" / "fast-cpu.yaml"
INT8 = "quantize.ort-int8-dynamic"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def onnx_dir(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from slimline.pipeline.single import export_to

    return export_to(tiny_bert, tmp_path_factory.mktemp("export") / "onnx").path


@pytest.fixture(scope="module")
def bundle(onnx_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from slimline.deploy.bundle import package

    out = tmp_path_factory.mktemp("bundle") / "tiny"
    package(onnx_dir, out, name="tiny-bert", archive=True)
    return out


@pytest.fixture(scope="module")
def run_dir(tiny_bert: Path, labelled_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "out"
    completed = run_cli("run", "--checkpoint", str(tiny_bert), "--profile", str(FAST_PROFILE), "--out", str(out),
                        "--eval-data", str(labelled_csv))
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return out


@pytest.fixture
def copy_of(bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle, tmp_path / "copy"))


def _manifest(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())


def test_a_model_directory_becomes_a_triton_layout_with_every_file_hashed(bundle: Path, onnx_dir: Path) -> None:
    manifest = _manifest(bundle)
    assert manifest["schema_version"] == 1 and manifest["format"] == "onnx"
    assert manifest["engine"] == "model_repository/tiny-bert/1/model.onnx"
    assert _sha256(bundle / manifest["engine"]) == _sha256(onnx_dir / "model.onnx")
    assert manifest["model_version"] == _sha256(onnx_dir / "model.onnx")[:12]
    assert {"preprocessing/tokenizer.json", "preprocessing/config.json", "README.md",
            "model_repository/tiny-bert/config.pbtxt", manifest["engine"]} <= set(manifest["files"])
    on_disk = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()} - {"manifest.json"}
    assert set(manifest["files"]) == on_disk
    for rel, digest in manifest["files"].items():
        assert _sha256(bundle / rel) == digest, rel
    assert [step["name"] for step in manifest["lineage"]] == ["hf-checkpoint", "export.onnx"]
    assert manifest["model_manifest_sha256"] == _sha256(onnx_dir / "manifest.json")
    assert manifest["runtime"]["name"] == "onnxruntime" and manifest["runtime"]["version"]
    assert {"onnxruntime", "onnx", "transformers"} <= set(manifest["versions"])
    assert manifest["labels"] == ["neg", "pos"] and manifest["report"] is None
    assert "Not benchmarked" in (bundle / "README.md").read_text()


def test_a_run_directory_bundles_its_final_model_report_and_a_model_card_with_spreads(
        run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    completed = run_cli("package", str(run_dir), "--out", str(out), "--tar")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    manifest = _manifest(out)
    report = json.loads((run_dir / "report.json").read_text())
    final_stage = Path(report["stages"][-1]["directory"])
    assert manifest["model_manifest_sha256"] == report["stages"][-1]["manifest_sha256"]
    assert [s["name"] for s in manifest["lineage"]] == ["hf-checkpoint", "export.onnx", INT8]
    assert manifest["lineage"][-1]["parent_manifest_sha256"] == report["stages"][0]["manifest_sha256"]
    assert _sha256(out / "report.json") == _sha256(run_dir / "report.json")
    assert _sha256(out / manifest["engine"]) == _sha256(final_stage / "model.onnx")
    assert manifest["profile"]["name"] == "fast-cpu" and manifest["verdict"] == "pass"
    card = _one_line((out / "README.md").read_text())
    assert INT8 in card and "latency p50" in card and "p50 95% CI" in card
    assert "accuracy" in card and "(Wilson, n=" in card and "Not benchmarked" not in card
    assert (out.parent / "bundle.tar.gz").is_file()
    verified = run_cli("verify", str(out.parent / "bundle.tar.gz"))
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_verify_passes_on_a_fresh_bundle_and_its_archive(bundle: Path) -> None:
    for target in (bundle, bundle.parent / "tiny.tar.gz"):
        completed = run_cli("verify", str(target))
        assert completed.returncode == 0, completed.stdout + completed.stderr
        assert "OK" in completed.stdout and _manifest(bundle)["model_version"] in completed.stdout


def _tamper_engine(root: Path) -> str:
    engine = root / _manifest(root)["engine"]
    data = bytearray(engine.read_bytes())
    data[len(data) // 2] ^= 0xFF
    engine.write_bytes(bytes(data))
    return "sha256 mismatch for model_repository/tiny-bert/1/model.onnx"


def _remove_tokenizer(root: Path) -> str:
    (root / "preprocessing" / "tokenizer.json").unlink()
    return "missing file preprocessing/tokenizer.json"


def _add_model_version(root: Path) -> str:
    extra = root / "model_repository" / "tiny-bert" / "2"
    extra.mkdir()
    shutil.copy2(root / _manifest(root)["engine"], extra / "model.onnx")
    return "unexpected file model_repository/tiny-bert/2/model.onnx"


def _add_symlink(root: Path) -> str:
    (root / "preprocessing" / "evil.json").symlink_to("/etc/hostname")
    return "preprocessing/evil.json is a link"


@pytest.mark.parametrize("damage", [_tamper_engine, _remove_tokenizer, _add_model_version, _add_symlink],
                         ids=["tampered engine", "missing file", "unexpected file", "symlink"])
def test_verify_refuses_a_damaged_bundle_with_exit_2_and_names_the_file(copy_of: Path, damage) -> None:
    expected = damage(copy_of)
    completed = run_cli("verify", str(copy_of))
    assert completed.returncode == EXIT_BAD_INPUT, completed.stdout + completed.stderr
    stderr = _one_line(completed.stderr)
    assert "BundleError" in stderr and expected in stderr and "fix:" in stderr


def _set_runtime_version(root: Path, version: str) -> None:
    manifest = _manifest(root)
    manifest["runtime"]["version"] = version
    (root / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("recorded", ["99.0.0", "0.9.0", "1.999.0"])
def test_verify_refuses_a_runtime_version_this_machine_cannot_honour(copy_of: Path, recorded: str) -> None:
    _set_runtime_version(copy_of, recorded)
    completed = run_cli("verify", str(copy_of))
    assert completed.returncode == EXIT_BAD_INPUT, completed.stdout + completed.stderr
    stderr = _one_line(completed.stderr)
    assert f"packaged with onnxruntime {recorded}" in stderr and "install onnxruntime>=" in stderr


def test_a_newer_onnxruntime_patch_than_recorded_is_accepted(copy_of: Path) -> None:
    import onnxruntime

    major, minor = onnxruntime.__version__.split(".")[:2]
    _set_runtime_version(copy_of, f"{major}.{minor}.0")
    from slimline.deploy.manifest import verify_bundle

    assert verify_bundle(copy_of).recorded_runtime_version == f"{major}.{minor}.0"


def test_a_tensorrt_plan_needs_the_release_that_built_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from slimline.deploy import runtime as bundle_runtime
    from slimline.deploy.runtime import RuntimeRequirement, check_runtime

    monkeypatch.setattr(bundle_runtime, "local_version", lambda runtime: "10.4.0.26")
    assert check_runtime(RuntimeRequirement(name="tensorrt", version="10.4.0.11")) == "10.4.0.26"
    with pytest.raises(BundleError, match=r"(?s)built with TensorRT 10\.3\.0.*rebuild"):
        check_runtime(RuntimeRequirement(name="tensorrt", version="10.3.0"))


def test_verify_refuses_an_engine_the_runtime_cannot_load_even_when_hashes_match(copy_of: Path) -> None:
    manifest = _manifest(copy_of)
    engine = copy_of / manifest["engine"]
    engine.write_bytes(b"not an onnx model at all")
    manifest["files"][manifest["engine"]] = _sha256(engine)
    manifest["file_sizes"][manifest["engine"]] = engine.stat().st_size
    (copy_of / "manifest.json").write_text(json.dumps(manifest))
    from slimline.deploy.manifest import verify_bundle

    with pytest.raises(BundleError, match="cannot load"):
        verify_bundle(copy_of)


def test_package_refuses_a_plain_checkpoint_and_a_foreign_out_but_replaces_its_own(tiny_bert: Path, onnx_dir: Path,
                                                                                 tmp_path: Path) -> None:
    from slimline.core.errors import OutputError
    from slimline.deploy.bundle import package

    with pytest.raises(BundleError, match="not a slimline model directory"):
        package(tiny_bert, tmp_path / "never")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="already holds files"):
        package(onnx_dir, mine)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    assert not (tmp_path / "never").exists()
    first = package(onnx_dir, tmp_path / "bundle")
    second = package(onnx_dir, tmp_path / "bundle")  # slimline's own bundle: replaced, no --force needed
    assert first.manifest.model_version == second.manifest.model_version
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "mine"]


def test_the_archive_is_reproducible(bundle: Path, tmp_path: Path) -> None:
    from slimline.deploy.archive import write_archive

    first, second = write_archive(bundle, tmp_path / "a.tar.gz"), write_archive(bundle, tmp_path / "b.tar.gz")
    assert first.read_bytes() == second.read_bytes()


def _archive(path: Path, members: list[tuple[str, str, bytes | str]]) -> Path:
    """members: (kind, name, data or link target) with kind file, dir, symlink or hardlink."""
    with tarfile.open(path, "w:gz") as tar:
        for kind, name, payload in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))  # type: ignore[arg-type]
                continue
            info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE}[kind]
            info.linkname = str(payload) if kind != "dir" else ""
            tar.addfile(info)
    return path


UNSAFE_ARCHIVES = {
    "absolute path": ([("file", "/tmp/slimline-evil.txt", b"x")], "is an absolute path"),
    "dot-dot": ([("dir", "b", b""), ("file", "b/../../evil.txt", b"x")], "has a '..' component"),
    "escaping symlink": ([("dir", "b", b""), ("symlink", "b/link", "../../../etc/passwd")], "outside the bundle"),
    "absolute symlink": ([("dir", "b", b""), ("symlink", "b/link", "/etc/passwd")], "outside the bundle"),
    "escaping hardlink": ([("dir", "b", b""), ("hardlink", "b/link", "../etc/passwd")], "outside the bundle"),
}


@pytest.mark.parametrize("name", list(UNSAFE_ARCHIVES))
def test_extraction_refuses_members_that_escape_the_bundle_and_writes_nothing(name: str, tmp_path: Path) -> None:
    from slimline.deploy.archive import extract_archive

    members, reason = UNSAFE_ARCHIVES[name]
    archive = _archive(tmp_path / "evil.tar.gz", members)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(BundleError, match="refusing to extract") as caught:
        extract_archive(archive, dest)
    assert reason in str(caught.value)
    assert list(dest.iterdir()) == [] and not (tmp_path / "evil.txt").exists()


def test_verify_of_an_unsafe_archive_exits_2(tmp_path: Path) -> None:
    archive = _archive(tmp_path / "evil.tar.gz", UNSAFE_ARCHIVES["escaping symlink"][0])
    completed = run_cli("verify", str(archive))
    assert completed.returncode == EXIT_BAD_INPUT, completed.stdout + completed.stderr
    assert "refusing to extract" in _one_line(completed.stderr)


def test_a_bundle_archive_round_trips_to_identical_files(bundle: Path, tmp_path: Path) -> None:
    from slimline.deploy.archive import extract_archive

    root = extract_archive(bundle.parent / "tiny.tar.gz", tmp_path)
    assert root == tmp_path / "tiny"
    assert {p.relative_to(root).as_posix(): _sha256(p) for p in root.rglob("*") if p.is_file()} == {
        p.relative_to(bundle).as_posix(): _sha256(p) for p in bundle.rglob("*") if p.is_file()}


def _text_model_io() -> tuple[list[TensorSpec], list[TensorSpec]]:
    inputs = [TensorSpec(name=n, dtype="int64", shape=["batch_size", "sequence_length"])
              for n in ("input_ids", "attention_mask")]
    return inputs, [TensorSpec(name="logits", dtype="float32", shape=["batch_size", 2])]


def test_triton_config_for_onnx_with_dynamic_axes_batches_as_the_profile_says() -> None:
    from slimline.deploy.triton import config_for, render_config_pbtxt

    inputs, outputs = _text_model_io()
    profile = Profile(name="t", target=Target(threads=4),
                      shapes=[Shape(batch_size=8, sequence_length=128), Shape(batch_size=1, sequence_length=128)])
    text = render_config_pbtxt(config_for("tiny-bert", "onnx", inputs, outputs, profile))
    lines = [line.strip() for line in text.splitlines()]
    assert lines[:4] == ['name: "tiny-bert"', 'platform: "onnxruntime_onnx"', 'backend: "onnxruntime"',
                         "max_batch_size: 8"]
    assert text.count("dims: [ -1 ]") == 2 and "dims: [ 2 ]" in text
    assert 'name: "input_ids"' in text and 'name: "attention_mask"' in text and "data_type: TYPE_INT64" in text
    assert 'name: "logits"' in text and "data_type: TYPE_FP32" in text
    assert "dynamic_batching {" in text and "preferred_batch_size: [ 8 ]" in text
    assert "max_queue_delay_microseconds: 1000" in text
    assert "kind: KIND_CPU" in text and 'value: { string_value: "4" }' in text
    assert text.count("{") == text.count("}") and text.count("[") == text.count("]")


def test_triton_config_without_a_dynamic_batch_axis_or_for_a_plan() -> None:
    from slimline.deploy.triton import config_for, render_config_pbtxt

    inputs = [TensorSpec(name="input_ids", dtype="int32", shape=[1, "sequence"])]
    outputs = [TensorSpec(name="logits", dtype="float16", shape=[1, 3])]
    profile = Profile(name="g", target=Target(device="cuda", runtime="tensorrt"), shapes=[Shape(batch_size=4)])
    text = render_config_pbtxt(config_for("m", "tensorrt", inputs, outputs, profile))
    assert 'platform: "tensorrt_plan"' in text and 'backend: "tensorrt"' in text
    assert "max_batch_size: 0" in text and "dims: [ 1, -1 ]" in text and "dims: [ 1, 3 ]" in text
    assert "TYPE_INT32" in text and "TYPE_FP16" in text and "kind: KIND_GPU" in text
    assert "dynamic_batching" not in text and "intra_op_thread_count" not in text


def test_wilson_interval_brackets_the_accuracy() -> None:
    from slimline.deploy.model_card import wilson_interval_pct

    low, high = wilson_interval_pct(85.0, 1000)
    assert 82.6 < low < 85.0 < high < 87.2
    assert wilson_interval_pct(100.0, 10)[1] == pytest.approx(100.0)
