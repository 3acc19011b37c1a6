"""Generated sources stay what their generators write; the source tree is found (CPU only)."""

import importlib.util
from pathlib import Path

CSRC = Path(__file__).resolve().parents[1] / "csrc"


def test_fa3_wgmma_header_is_generated():
    spec = importlib.util.spec_from_file_location("gen_wgmma", CSRC / "kernels" / "fa3" / "gen_wgmma.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert gen.OUT.read_text() == gen.render(), "run python csrc/kernels/fa3/gen_wgmma.py"


def test_csrc_override_is_absolute(monkeypatch):
    from torch_flashinfer import _build

    monkeypatch.chdir(CSRC.parent)
    monkeypatch.setenv("TORCH_FLASHINFER_CSRC", "csrc")  # relative, as an A/B script passes it
    assert _build.csrc_dir() == CSRC  # absolute: ninja runs in the cache directory, not here
