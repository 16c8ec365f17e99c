"""``scopecast gather | train | export | reexport | evaluate``: the model subcommands (torch for train and export)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from .cli import DEFAULT_CONFIG, _optional_address

__all__ = ["add_model_commands"]


def _exposure_range(text: str) -> tuple[float, float]:
    """``--exposure-range LO,HI``: two exposures in ms with 0 < LO <= HI (an argparse type: a mistake is a usage
    error before the microscope starts, not a traceback after the camera was calibrated)."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not LO,HI in ms (e.g. 5,15)") from None
    if not 0 < lo <= hi < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: needs 0 < LO <= HI (ms)")
    return lo, hi


def _unknown_samples(core, samples: list[str]) -> str:
    """'' when the simulator hub offers every kind in ``samples``, else a line naming the unknown ones and those
    it has (a typo ended in a pymmcore-plus traceback after the camera was calibrated)."""
    allowed = list(core.getAllowedPropertyValues("Scope", "Sample"))
    unknown = [k for k in samples if k not in allowed]
    return f"unknown sample kind(s) {', '.join(unknown)}; the simulator has {', '.join(allowed)}" if unknown else ""


def _slide_kind(core) -> str | None:
    """The simulator hub's sample kind (``Scope``'s ``Sample``), or None where it is not one of its library's
    kinds (a user's specimen file) or there is no simulator."""
    from .sim.slide import SAMPLE_KINDS

    if "Scope" not in core.getLoadedDevices() or not core.hasProperty("Scope", "Sample"):
        return None
    kind = core.getProperty("Scope", "Sample")
    return kind if kind in SAMPLE_KINDS else None


def _gather(args: argparse.Namespace) -> int:
    """``scopecast gather``: the in-process simulator's sized configuration lives in a folder removed at the end."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="scopecast-gather-") as scratch:
        return _gather_in(args, Path(scratch))


def _gather_in(args: argparse.Namespace, scratch: Path) -> int:
    from scopecast.models.dataset import DOMAIN, check_new_dataset, gather

    try:  # before a daemon starts or anything is captured
        check_new_dataset(args.out, args.overwrite)
    except FileExistsError as e:
        print(f"scopecast gather: FileExistsError: {e}", file=sys.stderr)
        return 2
    daemon = None
    address = args.control
    if not address:  # run a daemon on the simulator in this process
        from .backend import load_mmcore_backend
        from .service import Daemon
        from .sim import sized_config

        cfg = sized_config(scratch, args.size, args.config)
        daemon = Daemon(load_mmcore_backend(cfg), Path(args.out) / "recordings", "tcp://127.0.0.1:*",
                        "tcp://127.0.0.1:*").start()
        address = daemon.control_address
    samples = None if args.samples == "slide" else (
        DOMAIN[args.task]["train"] if args.samples == "domain" else [k.strip() for k in args.samples.split(",") if k.strip()])
    plan: dict = {}
    if args.blank_fraction is not None:
        plan["blank_fraction"] = args.blank_fraction
    if args.exposure_range:
        plan["exposure_ms"] = args.exposure_range
    if args.defocus is not None:
        plan["defocus_um"] = args.defocus
    set_sample = None
    slide = _slide_kind(daemon.backend.core) if daemon is not None and samples is None else None
    if samples is not None:
        if daemon is None:
            print("scopecast gather: --samples needs the in-process simulator (drop --control, or pass "
                  "--samples slide to capture whatever slide the running daemon has)", file=sys.stderr)
            return 2
        core = daemon.backend.core
        why = _unknown_samples(core, samples)
        if why:
            daemon.close()
            print(f"scopecast gather: --samples: {why}", file=sys.stderr)
            return 2

        def set_sample(kind: str) -> None:  # the simulator hub's Sample property: a new slide on the stage
            core.setProperty("Scope", "Sample", kind)
    try:
        index = gather(address, args.task, args.out, args.train, args.val, seed=args.seed, samples=samples,
                       set_sample=set_sample, plan=plan, overwrite=args.overwrite, slide=slide)
    finally:
        if daemon is not None:
            daemon.close()
    print(f"scopecast gather: {args.task}: {index['splits']['train']['fields']} training and "
          f"{index['splits']['val']['fields']} validation fields -> {Path(args.out) / 'dataset.json'}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from scopecast.models.training import TrainConfig, train

    cfg = TrainConfig(task=args.task, depth=args.depth, width=args.width, steps=args.steps,
                      max_minutes=args.minutes, batch=args.batch, crop=args.crop, lr=args.lr, seed=args.seed,
                      normalization=args.normalization, gain_augment=args.gain_augment, threads=args.threads,
                      tier=args.tier, blocks=args.blocks, unshuffle=args.unshuffle, teacher=args.teacher or None,
                      distill_weight=args.distill_weight)
    try:
        ckpt = train(args.data, args.out, cfg, overwrite=args.overwrite)
    except (ValueError, FileNotFoundError, FileExistsError) as e:  # a dataset it cannot train on, a run in --out
        print(f"scopecast train: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    import torch

    meta = torch.load(ckpt, map_location="cpu", weights_only=False)
    print(f"scopecast train: {ckpt} ({meta['parameters']:,} parameters, {meta['steps_done']} steps, "
          f"{meta['train_seconds'] / 60:.1f} min); card: {Path(args.out) / 'card.md'}")
    m = meta["metrics"]
    for who, scores in [("model", m["model"]), *m["baselines"].items()]:
        for o, s in scores.items():
            print(f"  {who:<18} {o:<12} PSNR {s['psnr']:6.2f}  SSIM {s['ssim']:.3f}  r {s['pearson']:.3f}")
    print(f"  beats baselines: {m['beats_baselines']}")
    return 0 if m["beats_baselines"] else 3


def _evaluate(args: argparse.Namespace) -> int:
    from scopecast.models.evaluate_morphology import format_report, run_evaluation, update_card

    say = (lambda msg: print(f"  {msg}", file=sys.stderr, flush=True)) if not args.quiet else None
    reports = []
    for model in args.model:
        try:
            fig = None
            if args.figure:
                fig = args.figure if len(args.model) == 1 else str(Path(args.figure).with_name(
                    f"{Path(args.figure).stem}-{Path(model).name}{Path(args.figure).suffix}"))
            rep = run_evaluation(model, fields=args.fields, size=args.size, seed=args.seed,
                                 outside=not args.no_outside, progress=say, figure=fig, precision=args.precision)
        except Exception as e:  # noqa: BLE001 - a failed evaluation is reported by name
            print(f"scopecast evaluate: {model}: {type(e).__name__}: {e}", file=sys.stderr)
            return 2
        print(format_report(rep), flush=True)
        print()
        if args.card and args.precision != "fp32":
            print(f"scopecast evaluate: --card describes the package's fp32 model; not written for "
                  f"--precision {args.precision}", file=sys.stderr)
        elif args.card:
            cmd = (f"scopecast evaluate --model {shlex.quote(model)} --fields {args.fields} --size {args.size} "
                   f"--seed {args.seed}")  # the card's command, to copy: a path with spaces quoted
            update_card(Path(model) / "card.md", rep, cmd)
        reports.append(rep)
    if args.json:
        Path(args.json).write_text(json.dumps(reports if len(reports) > 1 else reports[0], indent=2))
    ok = all(r["verdict"]["beats_best_baseline_by_3db_everywhere"] and
             (r["verdict"]["blank_ok"] or r["task"] != "virtual-staining") for r in reports)
    return 0 if ok else 3


def _export(args: argparse.Namespace) -> int:
    from scopecast.export.package import export_package

    if args.int8 and not (Path(args.int8) / "dataset.json").is_file():  # before --overwrite replaces a package
        print(f"scopecast export: --int8 {args.int8}: not a gathered dataset (no dataset.json there: a folder "
              "from 'scopecast gather'); nothing was exported", file=sys.stderr)
        return 2
    try:
        res = export_package(args.checkpoint, args.out, name=args.name, tile=args.tile, halo=args.halo,
                             fp16=args.fp16, tensorrt=args.tensorrt, triton_repository=args.triton or None,
                             overwrite=args.overwrite, triton_options={
                                 "backend": args.triton_backend, "gpu": args.triton_gpu,
                                 "instances": args.triton_instances, "max_batch": args.triton_max_batch})
    except Exception as e:  # noqa: BLE001 - every export failure is reported by name
        print(f"scopecast export: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    p = res.reports["fp32"]
    print(f"scopecast export: {res.path} ({res.manifest.name}, sha256 {res.manifest.short_hash}); "
          f"FP32 parity max |err| {p['max_abs_error']:.2e} <= {p['tolerance']:g} on {p['inputs_shape']}")
    if "fp16" in res.reports:
        q = res.reports["fp16"]
        print(f"  FP16 model: max |err| {q['max_abs_error']:.2e} <= {q['tolerance']:.2e}")
    b = res.reports.get("bioimageio")
    if b:
        print(f"  bioimageio test: {b['status']}, max |Δ| {b['max_abs_diff']:.2g} counts "
              f"(bioimageio.core {b['bioimageio.core']})")
    for note in res.notes:
        print(f"  {note}")
    if args.int8:
        from scopecast.export.quantize import QuantizationRefused, quantize_package

        try:
            r = quantize_package(res.path, args.int8)
            print(f"  INT8 variant kept ({r['calibration']['method']} calibration): loses "
                  f"{max(r['loss_db'].values()):.2f} dB at most, "
                  f"{r['speed']['speedup']:.2f}x faster (int8.json)")
        except QuantizationRefused as e:
            print(f"  INT8 variant not kept: {e}")
        except Exception as e:  # noqa: BLE001 - the package stands; the variant could not be made (e.g. the dataset)
            print(f"scopecast export: --int8 {args.int8}: {type(e).__name__}: {e}; no INT8 variant", file=sys.stderr)
            return 2
    return 0


def _reexport(args: argparse.Namespace) -> int:
    from scopecast.export.repackage import reexport_onnx

    for package in args.package:
        try:
            r = reexport_onnx(package)
        except Exception as e:  # noqa: BLE001 - every failure is reported by name
            print(f"scopecast reexport: {package}: {type(e).__name__}: {e}", file=sys.stderr)
            return 2
        print(f"scopecast reexport: {package}: model.onnx sha256 {r['old_sha256'][:12]} -> {r['sha256'][:12]}; "
              f"max |new - old| {r['max_abs_error_vs_old']:.2e}, FP32 parity {r['parity']['max_abs_error']:.2e}")
    return 0


def add_model_commands(sub) -> None:
    """The model subcommands: gather, train, export, reexport, evaluate."""
    g = sub.add_parser("gather", help="record paired training data with the daemon (simulated scope)",
                       description="Dual-modality captures over separate training and validation slide regions.")
    g.add_argument("--task", default="virtual-staining", choices=["virtual-staining", "super-resolution"])
    g.add_argument("--out", required=True, help="dataset folder (dataset.json + recordings)")
    g.add_argument("--train", type=int, default=48, help="training fields of view")
    g.add_argument("--val", type=int, default=16, help="validation fields of view (another slide region)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--size", type=int, default=256, help="simulated camera size (pixels) when no --control")
    g.add_argument("--config", default=DEFAULT_CONFIG, help="simulator config when no --control")
    g.add_argument("--control", default="", type=_optional_address, help="use a running daemon instead of starting one")
    g.add_argument("--samples", default="slide",
                   help="sample kinds to capture, comma-separated (e.g. cells,epithelium,sparse,mitotic,debris); "
                   "'domain': the task's training morphologies (models/dataset.py DOMAIN); 'slide' (default): "
                   "whatever slide is loaded, one focus and exposure. Needs the in-process simulator")
    g.add_argument("--blank-fraction", type=float, default=None, help="share of empty fields (zero targets)")
    g.add_argument("--exposure-range", default=None, type=_exposure_range,
                   help="per-field exposure range in ms, e.g. 5,15")
    g.add_argument("--defocus", type=float, default=None, help="per-field focus drawn within ± this (µm)")
    g.add_argument("--overwrite", action="store_true", help="replace the dataset.json already in --out (its "
                   "recordings stay on disk, listed no more); without it such an --out is refused")
    g.set_defaults(func=_gather)

    t = sub.add_parser("train", help="train a model on a gathered dataset (needs the 'train' extra)",
                       description="Seeded CPU training with checkpoints, a loss log, held-out evaluation "
                       "against baselines and a model card.")
    t.add_argument("--task", default="virtual-staining", choices=["virtual-staining", "super-resolution"])
    t.add_argument("--data", required=True, help="dataset folder from 'scopecast gather'")
    t.add_argument("--out", required=True, help="run folder (checkpoint.pt, log.jsonl, card.md)")
    t.add_argument("--overwrite", action="store_true",
                   help="replace the run already in --out; without it such an --out is refused")
    t.add_argument("--steps", type=int, default=1500)
    t.add_argument("--minutes", type=float, default=12.0, help="time budget")
    t.add_argument("--depth", type=int, default=3)
    t.add_argument("--width", type=int, default=16)
    t.add_argument("--batch", type=int, default=8)
    t.add_argument("--crop", type=int, default=96)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--normalization", default="calibrated", choices=["calibrated", "percentile"],
                   help="calibrated (default): constants fixed from the training data; percentile: per image")
    t.add_argument("--gain-augment", type=float, default=1.25,
                   help="random brightness gain per crop within [1/g, g] (exposure augmentation; 1 = off)")
    t.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    t.add_argument("--tier", default="accurate", choices=["accurate", "live"],
                   help="accurate: U-Net (--depth, --width); live: the CPU real-time LiveNet (--width, --blocks, --unshuffle)")
    t.add_argument("--blocks", type=int, default=8, help="live tier: separable blocks")
    t.add_argument("--unshuffle", type=int, default=4, help="live tier: pixel-unshuffle factor of the stem "
                   "(the body runs at 1/unshuffle of the input sampling)")
    t.add_argument("--teacher", default="", help="distil from this accurate model of the same task: a checkpoint, "
                   "or a package directory with PyTorch weights (e.g. models/packages/virtual-staining)")
    t.add_argument("--distill-weight", type=float, default=1.0, help="weight of the teacher's L1 term")
    t.set_defaults(func=_train)

    x = sub.add_parser("export", help="checkpoint -> ONNX model package (needs the 'train' extra)",
                       description="ONNX (opset 18, dynamic shapes) + parity check + manifest + bioimage.io "
                       "rdf.yaml + test tensors; optional FP16, TensorRT engine, Triton repository.")
    x.add_argument("--checkpoint", required=True)
    x.add_argument("--out", required=True, help="package folder to create")
    x.add_argument("--name", default=None, help="package name (5-64 letters, digits, '_', '-': bioimage.io's rule; "
                   "default: the checkpoint's task): results, spot checks and Triton models are named by it")
    x.add_argument("--tile", type=int, default=256)
    x.add_argument("--halo", type=int, default=32)
    x.add_argument("--fp16", action="store_true", help="also write model_fp16.onnx with its parity report")
    x.add_argument("--tensorrt", action="store_true", help="also build model.plan (needs TensorRT and a GPU)")
    x.add_argument("--triton", default="", help="also write a Triton model repository here")
    x.add_argument("--overwrite", action="store_true",
                   help="replace --out if it is a model package (or an empty folder); any other folder is refused")
    x.add_argument("--int8", default="", metavar="DATASET", help="also quantize to INT8, calibrated on this "
                   "gathered dataset's training fields (the calibration chosen on further training fields); kept "
                   "only if no output loses more than 0.5 dB on its validation fields and it runs faster than FP32")
    x.add_argument("--triton-backend", default="python", choices=["python", "onnxruntime", "tensorrt"],
                   help="network model backend in the Triton repository (python: what the PyPI server loads)")
    x.add_argument("--triton-gpu", action="store_true", help="Triton instances on the GPU (KIND_GPU)")
    x.add_argument("--triton-instances", type=int, default=1, help="Triton model instances")
    x.add_argument("--triton-max-batch", type=int, default=8, help="Triton max_batch_size (dynamic batching)")
    x.set_defaults(func=_export)

    rx = sub.add_parser("reexport", help="write a package's model.onnx again from its own weights.pt (needs the "
                        "'train' extra)", description="Re-export with the current exporter (e.g. a faster graph for "
                        "the same network); the new file must give the old one's outputs on the package's test input "
                        "(FP32 tolerance), so the package's measured figures still hold. Updates the manifest's "
                        "sha256 and the bioimage.io files; variants are left as they are.")
    rx.add_argument("--package", action="append", required=True, help="package folder (repeat for several)")
    rx.set_defaults(func=_reexport)

    ev = sub.add_parser("evaluate", help="per-morphology evaluation of model packages against baselines (no torch)",
                        description="Captures fresh fields on the simulated scope (held-out region of each training "
                        "morphology, held-out morphologies, a blank slide, failure modes outside the validated "
                        "domain) and runs the package through the engine (guards included) next to linear "
                        "regression / bicubic / Richardson-Lucy baselines; for super-resolution also the "
                        "resolution target. Exit status 3 when a target of issue 10 is missed.")
    ev.add_argument("--model", action="append", required=True, help="package folder (repeat for several)")
    ev.add_argument("--fields", type=int, default=8, help="fields per row")
    ev.add_argument("--size", type=int, default=256, help="simulated camera size (pixels)")
    ev.add_argument("--seed", type=int, default=500, help="field positions (never those of training)")
    ev.add_argument("--no-outside", action="store_true", help="skip the outside-the-domain rows")
    ev.add_argument("--precision", default="fp32", choices=["fp32", "int8"],
                    help="int8: evaluate the package's INT8 variant (scopecast export --int8)")
    ev.add_argument("--card", action="store_true", help="write the figures into the package's card.md")
    ev.add_argument("--json", default="", help="also write the report(s) as JSON here")
    ev.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    ev.add_argument("--figure", default="", help="also write a PNG: the first field of every row (with several "
                    "--model, one file each, the package name appended)")
    ev.set_defaults(func=_evaluate)
