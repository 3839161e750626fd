"""What `sam build` produces, against Lambda's package size limits.

The build is this run's own (benchmarks/sam_build.py: `.venv-sam/bin/sam build` into a scratch
folder, python3.13 from pyenv on PATH). Unzipped: the bytes of every file, as Lambda extracts them;
zipped: each folder zipped in memory with zlib (what `sam deploy` uploads). The baseline is the limit:
250 MB unzipped for a function's code plus all its layers, and 50 MB for a zip uploaded directly
(SAM uploads through S3, where only the unzipped limit applies), so the ratio is the fraction of the
limit used. If SAM CLI or python3.13 is missing, or the build fails, the rows are skipped with why.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from benchmarks import sam_build
from benchmarks.registry import Context, Row

TITLE = "Lambda package and layer sizes from `sam build`"
AREA = "sizes"

MB = 1024 * 1024
UNZIPPED_LIMIT_MB = 250  # 262,144,000 bytes: a function's code plus all its layers, extracted
ZIPPED_LIMIT_MB = 50  # a .zip uploaded directly through the Lambda API (SAM goes through S3)
ROWS = ("sizes.layer_unzipped", "sizes.layer_zipped", "sizes.largest_function_unzipped")


def _files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


def unzipped_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in _files(folder))


def zipped_bytes(folder: Path) -> int:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in _files(folder):
            archive.write(path, path.relative_to(folder).as_posix())
    return len(buffer.getvalue())


def _breakdown(layer_python: Path) -> list[tuple[str, int]]:
    """Unzipped bytes of each top-level entry of the layer's python/ folder, largest first."""
    entries = []
    for entry in layer_python.iterdir():
        size = unzipped_bytes(entry) if entry.is_dir() else entry.stat().st_size
        entries.append((entry.name, size))
    return sorted(entries, key=lambda item: -item[1])


def run(context: Context) -> list[Row]:
    context.progress("sizes: sam build (shared with cold_imports), then sizes of what it built")
    built = sam_build.build()
    if isinstance(built, str):
        for name in ROWS:
            context.skip(name, built)
        return []
    layer = built.artifacts["SharedLayer"]
    layer_bytes = unzipped_bytes(layer)
    layer_zipped = zipped_bytes(layer)
    pyc_bytes = sum(path.stat().st_size for path in _files(layer) if path.suffix == ".pyc")
    metadata_bytes = sum(
        unzipped_bytes(entry) for entry in (layer / "python").iterdir() if entry.name.endswith(".dist-info")
    )
    functions = {
        name: (unzipped_bytes(path), zipped_bytes(path))
        for name, path in sorted(built.artifacts.items())
        if name != "SharedLayer"
    }
    largest = max(functions, key=lambda name: functions[name][0])
    top = ", ".join(f"{name} {size / MB:.2f} MB" for name, size in _breakdown(layer / "python")[:6])
    built_how = (
        f"this run's `sam build` ({built.seconds:.1f} s, no container; the layer by layers/shared/Makefile: "
        "pip for arm64, then compileall with unchecked-hash .pyc)"
    )
    return [
        Row(
            area=AREA,
            name="sizes.layer_unzipped",
            title="the shared layer, unzipped (what /opt holds)",
            measured=layer_bytes / MB,
            baseline=UNZIPPED_LIMIT_MB,
            unit="MB",
            measured_label=f"SharedLayer: {layer_bytes:,} bytes in {len(_files(layer)):,} files",
            baseline_label="Lambda's limit for a function's code and all its layers, unzipped "
            "(262,144,000 bytes)",
            notes=[
                built_how,
                "MB here is 1,048,576 bytes, as in Lambda's quota",
                f"largest parts of python/: {top}",
                f".pyc files: {pyc_bytes / MB:.2f} MB ({pyc_bytes / layer_bytes:.0%}; the price of not "
                "compiling at every cold start); package metadata (*.dist-info): "
                f"{metadata_bytes / MB:.2f} MB",
                "boto3 and botocore are not in it: the python3.13 runtime provides them",
            ],
            details={"bytes": layer_bytes, "pyc_bytes": pyc_bytes, "breakdown": _breakdown(layer / "python")},
        ),
        Row(
            area=AREA,
            name="sizes.layer_zipped",
            title="the shared layer, zipped (what is uploaded, and what a cold start downloads)",
            measured=layer_zipped / MB,
            baseline=ZIPPED_LIMIT_MB,
            unit="MB",
            measured_label=f"SharedLayer zipped in memory (zlib, as sam deploy does): {layer_zipped:,} bytes",
            baseline_label="Lambda's limit for a .zip uploaded directly (SAM uploads through S3, where only "
            "the unzipped limit applies)",
            notes=[built_how, f"compression ratio {layer_zipped / layer_bytes:.2f}"],
            details={"bytes": layer_zipped},
        ),
        Row(
            area=AREA,
            name="sizes.largest_function_unzipped",
            title="the largest function with its layer, unzipped (what counts against the 250 MB limit)",
            measured=(functions[largest][0] + layer_bytes) / MB,
            baseline=UNZIPPED_LIMIT_MB,
            unit="MB",
            measured_label=f"{largest}: its code {functions[largest][0]:,} bytes + SharedLayer",
            baseline_label="Lambda's limit for a function's code and all its layers, unzipped",
            notes=[
                "each function's own code, unzipped / zipped: "
                + "; ".join(
                    f"{name} {raw:,} / {packed:,} bytes" for name, (raw, packed) in functions.items()
                ),
                "every function has the one layer; their own folders hold only the handler module",
            ],
            details={
                "functions": {
                    name: {"bytes": raw, "zipped": packed} for name, (raw, packed) in functions.items()
                }
            },
        ),
    ]
