"""Differential testing of the model against the real kernel (``vfiolab diff``, docs/oracle.md).

A scenario (:mod:`.scenario`) is a sequence of uAPI calls with references to earlier results; it runs
in-process on the model (:mod:`.model_backend`) and inside a QEMU guest on Linux 7.2's real /dev/iommu
(:mod:`.backend`'s ``KernelBackend``, started by :mod:`.guest`, booted by :mod:`.guestrun`); every call's
errno and outputs are recorded (:mod:`.runner`) and compared (:mod:`.compare`), reporting the first
divergence with both sides.  Scenarios come from the hand corpus (:mod:`.corpus`) or the seeded random
generator (:mod:`.generate`); :mod:`.session` ties it together.

This package's ``__init__`` imports nothing: the guest loads only the standard-library modules it needs.
"""
