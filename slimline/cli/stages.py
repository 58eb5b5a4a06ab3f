"""`slimline run | demo | export | compress | bench`: arguments in, slimline.api out."""

from __future__ import annotations

import argparse
from pathlib import Path

from slimline import api
from slimline.cli.arguments import bounded_int
from slimline.cli.console import console, print_report, verdict_exit
from slimline.cli.history import add_history_options, history_argument
from slimline.core.errors import EXIT_OK, RecipeError
from slimline.core.outputs import claimed_output

FORCE_HELP = ("write into an --out holding files slimline did not write, beside them (none is deleted or "
              "replaced; never /, $HOME, the working directory or its parents, or an input)")
EVALUATOR_HELP = ("how quality is scored, instead of the choice by task and data: text-classification, image-top1, "
                  "agreement (every output vs fp32 by its kind), embedding (cosine on every output), perplexity")
BASE_HELP = ("base checkpoint directory a PEFT adapter is merged into (default: the local path named by "
             "base_model_name_or_path in adapter_config.json)")


#: `run` options a run.yaml already states: given with --config they would be ignored, so they are refused.
CONFIG_STATES = ("profile", "recipe", "task", "eval_data", "evaluator", "bench_export", "base", "weights", "inputs")


def cmd_run(args: argparse.Namespace) -> int:
    if args.config is not None:
        given = [f"--{name.replace('_', '-')}" for name in CONFIG_STATES if getattr(args, name) not in (None, False)]
        if given:
            raise RecipeError(f"--config {args.config} states the whole run; {', '.join(given)} cannot be "
                              "combined with it.", fix="edit run.yaml instead, or run without --config.")
        report = api.rerun(args.config, out=args.out, force=args.force, history=history_argument(args),
                           mlflow_uri=args.mlflow_uri)
    else:
        if args.out is None:
            raise RecipeError("run needs --out (the run directory).", fix="add --out DIR.")
        report = api.run(args.checkpoint, out=args.out, profile=args.profile or "cpu", recipe=args.recipe,
                         task=args.task, eval_data=args.eval_data, bench_export=args.bench_export, force=args.force,
                         base=args.base, model_factory=args.model_factory, weights=args.weights, inputs=args.inputs,
                         evaluator=args.evaluator, history=history_argument(args), mlflow_uri=args.mlflow_uri)
    print_report(report)
    where = f"{Path(args.out)}/" if args.out else "the run directory named in the config: "
    console().print(f"report: {where}report.json, report.md and report.html; run.yaml beside them reruns it "
                    "(slimline run --config run.yaml)")
    return verdict_exit(report)


def cmd_demo(args: argparse.Namespace) -> int:
    # --out's rule and lock, then the profile: both before the (slow) first build of the checkpoint
    with claimed_output(Path(args.out), "run"):
        profile = api.as_profile(args.profile)
        api.check_history(history_argument(args))
        checkpoint = api.demo_checkpoint()
        accuracy = checkpoint.manifest.metadata.get("accuracy", {})
        console().print(f"demo checkpoint: {checkpoint.path} (test accuracy "
                        f"{accuracy.get('test', float('nan')):.4f})")
        report = api.run(checkpoint.path, out=args.out, profile=profile, bench_export=True,
                         history=history_argument(args), mlflow_uri=args.mlflow_uri)
        print_report(report)
        console().print(f"report: {Path(args.out) / 'report.json'}, report.md and report.html")
        bundle = api.package(args.out, out=Path(args.out) / "bundle", name="minilm-l6-rotten-tomatoes", force=True)
    console().print(f"bundle: {bundle.path} (check it with `slimline verify {bundle.path}`, "
                    f"serve it with `slimline serve {bundle.path}`)")
    return verdict_exit(report)


def cmd_export(args: argparse.Namespace) -> int:
    model_dir = api.export(args.checkpoint, out=args.out, task=args.task, opset=args.opset, exporter=args.exporter,
                           force=args.force, base=args.base)
    parity = model_dir.manifest.metadata.get("parity", {})
    console().print(f"exported {model_dir.model_path} with {model_dir.manifest.metadata.get('exporter')} "
                    f"(parity max|diff| {parity.get('max_abs_diff', float('nan')):.2e})")
    return EXIT_OK


def cmd_compress(args: argparse.Namespace) -> int:
    model_dir = api.compress(args.checkpoint, recipe=args.recipe, out=args.out, profile=args.profile,
                             eval_data=args.eval_data, force=args.force, base=args.base)
    console().print(f"wrote {model_dir.path} ({model_dir.manifest.format}, {model_dir.size_mb():.1f} MB)")
    return EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    report = api.bench(args.checkpoint, out=args.out, profile=args.profile, baseline=args.baseline,
                       eval_data=args.eval_data, force=args.force, base=args.base,
                       history=history_argument(args), mlflow_uri=args.mlflow_uri, evaluator=args.evaluator)
    print_report(report)
    return verdict_exit(report)


def add_stage_commands(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="compress -> export -> bench -> verdict for one checkpoint and profile")
    source = run.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-factory", help="a plain PyTorch model: pkg.module:callable that builds the nn.Module "
                        "(with --weights and --inputs)")
    run.add_argument("--weights", help="the module's state dict: .safetensors, or a .pt/.pth read with "
                     "torch.load(weights_only=True)")
    run.add_argument("--inputs", help="input spec YAML for --model-factory or a TorchScript --checkpoint (for an "
                     "ONNX one: optional, renames the graph's axes): inputs (name, dtype, shape; strings are dynamic "
                     "axes, `batch` the batch wherever it is, shape [] a scalar), outputs, task, label_names, "
                     "image_preprocess")
    source.add_argument("--checkpoint", "--model", dest="checkpoint", metavar="PATH", help="Hugging Face checkpoint "
                        "directory, a PEFT adapter directory (adapter_config.json + weights) to merge into --base, an "
                        "ONNX file (or a directory holding one) or a TorchScript file (torch.jit.save, with --inputs)")
    source.add_argument("--config", help="a run.yaml written beside a report: run exactly that again (with --out to "
                        "write elsewhere)")
    run.add_argument("--base", help=BASE_HELP)
    run.add_argument("--profile", help="profile name or YAML path (default: cpu)")
    run.add_argument("--out", help="run directory (stages/, report.json, report.md, run.yaml); required unless "
                     "--config names one")
    run.add_argument("--recipe", help="recipe name or YAML (default: the profile's recipe)")
    run.add_argument("--task", help="override the task inferred from config.json")
    run.add_argument("--eval-data", help="quality data: rotten-tomatoes[:split] or FILE.csv/.jsonl (text; a causal "
                     "LM scores perplexity on its text), FILE.txt, an image folder or .npz [:split] (default split: "
                     "test; static INT8 calibrates on the train split), or pkg.module:function returning input arrays")
    run.add_argument("--evaluator", help=EVALUATOR_HELP)
    run.add_argument("--bench-export", action="store_true", help="also benchmark the fp32 ONNX export")
    run.add_argument("--force", action="store_true", help=FORCE_HELP)
    add_history_options(run)
    run.set_defaults(handler=cmd_run)

    demo = sub.add_parser("demo", help="build the offline demo checkpoint (cached) and run a profile on it")
    demo.add_argument("--profile", default="cpu")
    demo.add_argument("--out", default="slimline-demo")
    add_history_options(demo)
    demo.set_defaults(handler=cmd_demo)

    export = sub.add_parser("export", help="export a Hugging Face checkpoint to an ONNX model directory")
    export.add_argument("--checkpoint", "--model", dest="checkpoint", required=True, metavar="DIR",
                        help="Hugging Face checkpoint or PEFT adapter directory")
    export.add_argument("--base", help=BASE_HELP)
    export.add_argument("--out", required=True)
    export.add_argument("--task")
    export.add_argument("--opset", type=bounded_int(14, 21), default=18, help="ONNX opset, 14..21 (default 18)")
    export.add_argument("--exporter", choices=["auto", "optimum", "torch"], default="auto")
    export.add_argument("--force", action="store_true", help=FORCE_HELP)
    export.set_defaults(handler=cmd_export)

    compress = sub.add_parser("compress", help="apply a recipe's passes to a model directory")
    compress.add_argument("--checkpoint", "--model", dest="checkpoint", required=True, metavar="PATH",
                          help="input model: a Hugging Face checkpoint, a slimline model directory, an ONNX file (or "
                          "a directory holding one), or a PEFT adapter directory with --base")
    compress.add_argument("--base", help=BASE_HELP)
    compress.add_argument("--recipe", required=True, help="recipe name or YAML")
    compress.add_argument("--profile", default="cpu", help="target the passes are checked against")
    compress.add_argument("--out", required=True)
    compress.add_argument("--eval-data", help="labelled data for accuracy-aware passes (validation split is used)")
    compress.add_argument("--force", action="store_true", help=FORCE_HELP)
    compress.set_defaults(handler=cmd_compress)

    bench = sub.add_parser("bench", help="benchmark a model directory against its fp32 source on a profile")
    bench.add_argument("--checkpoint", "--model", dest="checkpoint", required=True, metavar="PATH",
                       help="the model to benchmark: a directory written by export or compress, or an ONNX / "
                       "TorchScript file")
    bench.add_argument("--profile", default="cpu")
    bench.add_argument("--out", required=True)
    bench.add_argument("--baseline", help="the fp32 original: an HF checkpoint, a PEFT adapter directory (with "
                       "--base) or an fp32 ONNX model directory (default: the model's lineage source)")
    bench.add_argument("--base", help="when --baseline is a PEFT adapter directory: " + BASE_HELP)
    bench.add_argument("--eval-data")
    bench.add_argument("--evaluator", help=EVALUATOR_HELP)
    bench.add_argument("--force", action="store_true", help=FORCE_HELP)
    add_history_options(bench)
    bench.set_defaults(handler=cmd_bench)
