"""Regenerates the README's figures (docs/figures/*.png) from the default `gsc-core report` run,
at a low resolution and with a 256-colour palette so they stay small in the repository.

Run:  .venv/bin/python docs/make_figures.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from PIL import Image

from gsc_core import cli

HERE = Path(__file__).resolve().parent / "figures"


def main() -> None:
    HERE.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        assert cli.main(["report", "--out", tmp, "--dpi", "80", "--quiet"]) == 0
        for _key, filename, _title in cli.FIGURES:
            img = Image.open(Path(tmp) / filename).convert("RGB")
            img.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(HERE / filename, optimize=True)
    for path in sorted(HERE.glob("*.png")):
        print(f"{path.relative_to(HERE.parent.parent)}: {path.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
