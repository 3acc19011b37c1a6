"""python -m torch_flashinfer.build picks the libraries asked for and refuses unknown ones (CPU only)."""

import pytest
import torch

from torch_flashinfer import _build, _kernels, build


def test_selection_is_compiled(monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(_build, "compile_check", lambda libs, archs: seen.extend((lib.name, tuple(archs)) for lib in libs) or [])
    assert build.main(["--compile-only", "--archs", "90a", "--families", "fa3,fa2", "--dtypes", "bfloat16",
                       "--head-dims", "64,256"]) == 0
    assert seen == [(lib.name, ("90a",)) for lib in [_kernels.COMMON] + [
        _kernels.fwd_library(f, torch.bfloat16, d) for f in ("fa3", "fa2") for d in (64, 256)]]
    assert "compiled 5 kernel libraries for sm_90a" in capsys.readouterr().out


def test_default_is_every_library(monkeypatch):
    seen = []
    monkeypatch.setattr(_build, "compile_check", lambda libs, archs: seen.extend(libs) or [])
    assert build.main(["--compile-only"]) == 0
    assert [lib.name for lib in seen] == [lib.name for lib in _kernels.all_libraries()]
    assert len(seen) == 1 + len(_kernels.FAMILIES) * 2 * 8


@pytest.mark.parametrize("flag, value", [("--families", "fa4"), ("--dtypes", "float32"), ("--head-dims", "100"),
                                         ("--head-dims", "x"), ("--families", "")])
def test_unknown_values_are_refused(flag, value, capsys):
    with pytest.raises(SystemExit):
        build.main(["--compile-only", flag, value])
    assert f"{flag}: comma-separated values of" in capsys.readouterr().err
