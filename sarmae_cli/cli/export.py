"""`sarmae export`: ONNX export with embedded metadata and parity checks."""

from pathlib import Path
from typing import Annotated

import typer

from sarmae_cli.cli.options import Overwrite, not_implemented


def export(
    weights: Annotated[Path, typer.Argument(help="Weights file to export.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="ONNX file to write.")],
    fp16: Annotated[bool, typer.Option("--fp16", help="Store weights in float16.")] = False,
    int8: Annotated[bool, typer.Option("--int8", help="Dynamic int8 quantization.")] = False,
    overwrite: Overwrite = False,
) -> None:
    """Export weights to ONNX and check parity with onnxruntime.

    $ sarmae export weights/water.safetensors -o water.onnx
    """
    not_implemented("export", 6)
