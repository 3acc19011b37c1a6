"""Generated sources stay what their generators write (CPU only)."""

import importlib.util
from pathlib import Path

CSRC = Path(__file__).resolve().parents[1] / "csrc"


def test_fa3_wgmma_header_is_generated():
    spec = importlib.util.spec_from_file_location("gen_wgmma", CSRC / "kernels" / "fa3" / "gen_wgmma.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert gen.OUT.read_text() == gen.render(), "run python csrc/kernels/fa3/gen_wgmma.py"
