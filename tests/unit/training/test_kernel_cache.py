"""Compiled kernels compile once per machine, not once per process or dataset: numba keys its
on-disk cache by the pickled closure of the kernel, and a numba dispatcher pickles with an id that
is new in every process, so a kernel that captured a helper dispatcher missed the cache every time
(one kernel had 48 cached variants). Every kernel's closure holds modules only."""

from __future__ import annotations

import types

from crossrec import kernels


def test_no_kernel_captures_anything_but_modules():
    compiled = kernels._compile()
    assert {"bpr_step", "neighbourhood_forward", "row_adam"} <= set(compiled)
    for name, dispatcher in compiled.items():
        cells = dispatcher.py_func.__closure__ or ()
        held = [type(c.cell_contents).__name__ for c in cells if not isinstance(c.cell_contents, types.ModuleType)]
        assert not held, f"{name} captures {held}: its cache key changes every process"
