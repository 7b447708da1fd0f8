"""deeplab_compile.settings: the kernel settings in the environment, checked in one place."""
import subprocess
import sys

import pytest

from deeplab_compile import settings
from deeplab_compile.errors import DeepLabError


@pytest.mark.parametrize("var,good,bad", [("DEEPLAB_ASPP_CPU_KERNEL", "gemm", "avx512"),
                                          ("DEEPLAB_CRF_STORAGE", "float32", "fp16")])
def test_check_accepts_the_listed_values_and_names_the_fix_otherwise(monkeypatch, var, good, bad):
    monkeypatch.delenv(var, raising=False)
    assert settings.check(var) == ""
    monkeypatch.setenv(var, good)
    assert settings.check(var) == good
    settings.check_all()
    monkeypatch.setenv(var, bad)
    with pytest.raises(settings.SettingError) as err:
        settings.check_all()
    assert isinstance(err.value, DeepLabError) and isinstance(err.value, ValueError)
    text = str(err.value)
    assert var in text and repr(bad) in text and "unset it" in text and "\n" not in text


def test_the_start_up_check_does_not_import_torch():
    code = ("import os, sys; os.environ['DEEPLAB_CRF_STORAGE'] = 'float32'; "
            "from deeplab_compile import settings; settings.check_all(); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
