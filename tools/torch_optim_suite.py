"""A pytest plugin that runs PyTorch's own optimizer tests against fastoptim.torch.

PyTorch's ``TestOptimRenewed`` (``test/test_optim.py`` of the pytorch repository; it is
not shipped in the wheel) takes every optimizer from ``optim_db`` in
``torch.testing._internal.common_optimizers``. Loaded with ``-p``, this plugin replaces,
before the test file is collected, each ``optim_db`` entry's class with fastoptim.torch's
class of the same name; everything else (the inputs, the error inputs, the skips and the
expectations) stays torch's. ``FASTOPTIM_SWAP=0`` leaves torch's classes in place, for
the baseline on the same machine.

    pip install expecttest pytest-timeout          # torch's testing helpers import expecttest
    # test_optim.py from the pytorch tree of the installed torch, without its imports of the
    # sibling test modules (optim.test_lrscheduler, optim.test_optim, optim.test_swa_utils)
    # and the TestSWAUtils instantiation at its end
    PYTORCH_TESTING_DEVICE_ONLY_FOR=cpu PYTHONPATH=tools \\
        python -m pytest -p torch_optim_suite test_optim.py -q -p no:cacheprovider
"""

from __future__ import annotations

import os

import torch
from torch.testing._internal import common_optimizers

SWAP = os.environ.get("FASTOPTIM_SWAP", "1") != "0"
_SWAPPED: list[str] = []

if SWAP:
    import fastoptim.torch as ft

    for info in common_optimizers.optim_db:
        ours = getattr(ft, info.optim_cls.__name__, None)
        if isinstance(ours, type) and issubclass(ours, torch.optim.Optimizer):
            info.optim_cls = ours
            _SWAPPED.append(ours.__name__)


def pytest_report_header(config):
    if not SWAP:
        return [f"torch_optim_suite: torch {torch.__version__}, torch.optim's own classes"]
    return [f"torch_optim_suite: torch {torch.__version__}; fastoptim.torch classes for "
            f"{', '.join(_SWAPPED)}"]
