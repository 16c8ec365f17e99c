"""Loading model packages for the engine (see :mod:`scopecast.models.manifest`).

:func:`load_package` validates the manifest and verifies the model file's
sha256, so a corrupt or swapped file is refused with a message naming it.
The manifest itself and every file it names (``model_file``, ``plan_file``, each variant's
``file``) must lie inside the package directory once resolved (symbolic
links included): one that points elsewhere is refused before anything looks
at it, so a package can neither make the engine read other files nor learn
whether they exist.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import ValidationError

from scopecast.models.manifest import MANIFEST, ModelManifest, Normalization, OutputScaling, sha256_file

__all__ = [
    "PRECISIONS", "ModelManifest", "ModelPackage", "Normalization", "OutputScaling", "PackageError", "in_package",
    "load_package",
]

log = logging.getLogger(__name__)


class PackageError(ValueError):
    """A model package that cannot be used (message names the file and the problem)."""


PRECISIONS = ("fp32", "int8")


class ModelPackage:
    """A loaded, verified model package, at one precision (``fp32``: the manifest's ``model_file``)."""

    def __init__(self, path: Path, manifest: ModelManifest, precision: str = "fp32") -> None:
        self.path = path
        self.manifest = manifest
        self.precision = precision

    @property
    def model_path(self) -> Path:
        if self.precision != "fp32":
            return in_package(self.path, self.manifest.variants[self.precision].file,
                              f"variants.{self.precision}.file")
        return in_package(self.path, self.manifest.model_file, "model_file")

    @property
    def weights_sha256(self) -> str:
        """sha256 of the file this precision runs (``model_file`` for fp32, else the variant's file)."""
        return self.manifest.sha256 if self.precision == "fp32" else self.manifest.variants[self.precision].sha256

    @property
    def plan_path(self) -> Path | None:
        return in_package(self.path, self.manifest.plan_file, "plan_file") if self.manifest.plan_file else None

    def __repr__(self) -> str:
        m = self.manifest
        return (f"ModelPackage({m.name!r}, {m.task}, inputs={m.inputs}, outputs={m.outputs}, sha256={m.short_hash}, "
                f"precision={self.precision})")


def in_package(package: Path, name: str, field: str) -> Path:
    """``package / name`` if it resolves (symbolic links included) to a path inside ``package``.

    Checked before the file is looked at: the :class:`PackageError` names the manifest ``field`` and its
    value, never whether or what lies outside."""
    try:
        root = package.resolve()
        target = (package / name).resolve()
    except (OSError, ValueError, RuntimeError):  # a NUL in the name, a symbolic-link loop
        raise PackageError(f"{package}: {field} {name!r} is not a usable file name") from None
    if target == root or not target.is_relative_to(root):
        raise PackageError(f"{package}: {field} {name!r} is outside the package directory; a package may only "
                           "name files inside it")
    return package / name


def load_package(path: str | Path, precision: str = "fp32") -> ModelPackage:
    """Load and verify a package directory; raises :class:`PackageError` naming the problem.

    ``precision="int8"`` runs the package's INT8 variant, which exists only
    where quantization kept fidelity (``scopecast.export.quantize``); a package
    without it is refused with the reason. The returned manifest's ``validated``
    (spot-check floors, uncertainty thresholds) is the variant's own where it
    records one.
    """
    if precision not in PRECISIONS:
        raise PackageError(f"unknown precision {precision!r}; precisions: {', '.join(PRECISIONS)}")
    path = Path(path)
    mf = in_package(path, MANIFEST, "manifest") if path.is_dir() else path / MANIFEST  # a link out: never read
    if not mf.is_file():
        raise PackageError(f"{path} is not a model package: no {MANIFEST}")
    try:
        manifest = ModelManifest.model_validate_json(mf.read_bytes())  # bytes: not UTF-8 is invalid JSON, named
    except OSError as e:
        raise PackageError(f"{mf}: cannot read the manifest: {e.strerror or e}") from None
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'manifest'}: {err['msg']}" for err in e.errors())
        raise PackageError(f"{mf}: invalid manifest: {problems}") from None
    model = in_package(path, manifest.model_file, "model_file")
    for key, variant in manifest.variants.items():
        in_package(path, variant.file, f"variants.{key}.file")
    if manifest.plan_file:
        in_package(path, manifest.plan_file, "plan_file")
    if not model.is_file():
        raise PackageError(f"{path}: model file {manifest.model_file!r} is missing")
    digest = sha256_file(model)
    if digest != manifest.sha256:
        raise PackageError(
            f"{model}: sha256 {digest[:12]}… does not match the manifest ({manifest.sha256[:12]}…); "
            "the file is corrupt or was replaced"
        )
    if precision != "fp32":
        variant = manifest.variants.get(precision)
        if variant is None:
            report = path / "int8.json"
            why = (f"quantization was refused (see {report})" if report.is_file()
                   else "it was never quantized (scopecast.export.quantize)")
            raise PackageError(f"{path}: no {precision} variant: {why}")
        vfile = in_package(path, variant.file, f"variants.{precision}.file")
        if not vfile.is_file() or sha256_file(vfile) != variant.sha256:
            raise PackageError(f"{vfile}: the {precision} variant is missing or does not match its sha256")
        if variant.validated is not None:  # the figures the monitor compares with are the variant's own
            manifest = manifest.model_copy(update={"validated": variant.validated})
        else:  # the fp32 figures: a quantized model's own differ (false alarms, or misses)
            log.warning("%s: the %s variant has no validated figures of its own; the trust monitor judges it by the "
                        "fp32 model's (measure its own: benchmarks/bench_trust_models.py --model %s --validated "
                        "--precision %s --write)", path, precision, path, precision)
    return ModelPackage(path, manifest, precision)
