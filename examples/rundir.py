"""A fresh, uniquely named run folder: ``runs/<YYYYmmdd-HHMMSS>[-N]``; an existing one is never reused."""

import os
import time


def new_run_dir(root="runs", stamp=None, prefix=""):
    """Creates and returns ``root/<prefix><stamp>``, adding ``-2``, ``-3``, ... if that name is taken.

    stamp: defaults to the local time as YYYYmmdd-HHMMSS. Creation is atomic (os.mkdir), so two
    runs started in the same second get different folders."""
    stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
    os.makedirs(root, exist_ok=True)
    base = os.path.join(root, prefix + stamp)
    for n in range(1, 1000):
        path = base if n == 1 else f"{base}-{n}"
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"could not find a free run folder name for {base} (tried 999)")
