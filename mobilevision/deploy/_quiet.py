"""Exporters' chatter off while they run: the loggers named (deprecation notices, pytree registrations, untested-
version warnings), Python warnings and, where asked, tqdm progress bars (coremltools draws them with no switch)."""

from __future__ import annotations

import functools
import logging
import warnings
from contextlib import contextmanager
from typing import Iterator

__all__ = ["quiet"]


@contextmanager
def quiet(*logger_names: str, progress_bars: bool = True) -> Iterator[None]:
    loggers = [logging.getLogger(n) for n in ("torch.utils._pytree", "torch._export", "torch.export", *logger_names)]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    init = None
    if not progress_bars:
        import tqdm

        init = tqdm.tqdm.__init__
        tqdm.tqdm.__init__ = functools.partialmethod(init, disable=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        if init is not None:
            import tqdm

            tqdm.tqdm.__init__ = init
