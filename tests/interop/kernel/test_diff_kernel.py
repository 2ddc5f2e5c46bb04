"""The differential test against the real kernel: the hand corpus and 200 seeded random sequences of 25 uAPI
calls each run in-process on the model and, in one QEMU boot of the kernel rig's Linux 7.2, on the real
/dev/iommu (rig/kernel-rootfs.sh, vfiolab.difftest); every call's errno and outputs must agree.

The ten divergences the runner found were fixed on the model side; their scenarios stay in the corpus
(``known-*``) as regressions that must agree like any other.  The table in vfiolab.difftest.known is for a
newly understood divergence awaiting its fix (counted apart, its scenario marked xfail; it is empty now).
VFIOLAB_DIFF_SEED / VFIOLAB_DIFF_COUNT / VFIOLAB_DIFF_LENGTH change the
random part (the seed is printed: `vfiolab diff --random 1 --seed S --index K --length L` replays one).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
from kselftest_cache import kernel_dir

from vfiolab.cli.diff import summary_lines
from vfiolab.difftest.corpus import load_corpus
from vfiolab.difftest.generate import random_scenarios
from vfiolab.difftest.session import DiffReport, diff

pytestmark = [pytest.mark.interop, pytest.mark.kernel]

SEED = int(os.environ.get("VFIOLAB_DIFF_SEED", "7202"))
COUNT = int(os.environ.get("VFIOLAB_DIFF_COUNT", "200"))
LENGTH = int(os.environ.get("VFIOLAB_DIFF_LENGTH", "25"))


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DiffReport]:
    kernel_dir()  # a missing kernel rig fails here with the command that builds it
    corpus = load_corpus()
    scenarios = corpus + random_scenarios(COUNT, SEED, LENGTH)
    rep = diff(scenarios, outdir=tmp_path_factory.mktemp("diff"))
    print(f"\nvfiolab diff: corpus {len(corpus)} + random {COUNT} (seed {SEED}, length {LENGTH})")
    for line in summary_lines(rep):
        print(line)
    yield rep


def test_no_new_divergence(report: DiffReport, record_property: Callable[[str, object], None]) -> None:
    record_property("summary", f"vfiolab diff against Linux: random {COUNT} sequences (seed {SEED}, length "
                    f"{LENGTH}) + corpus; " + "; ".join(summary_lines(report)))
    new = [str(c.divergence) for i, c in enumerate(report.comparisons) if report.outcome(i) == "diverge"]
    assert not new, "\n\n".join(new)


def test_known_divergences_still_diverge(report: DiffReport) -> None:
    gone = [s.name for i, s in enumerate(report.scenarios) if report.outcome(i) == "xpassed"]
    assert not gone, f"these xfail scenarios agree now: drop their mark and the known entry: {gone}"


def test_written_expectations_hold_on_both_sides(report: DiffReport) -> None:
    failed = [f"{e.scenario}: call {e.index} {e.call} ({e.side}): expected {e.expected}, got {e.got}"
              for c in report.comparisons for e in c.expectations]
    assert not failed, "\n".join(failed)


def test_the_comparison_covers_enough(report: DiffReport) -> None:
    random_part = [c for c in report.comparisons if c.scenario.startswith("random-")]
    assert len(random_part) == COUNT >= 200 and LENGTH >= 20
    assert report.calls >= COUNT * LENGTH * 9 // 10  # a few sequences stop at a known divergence


def test_guest_is_quick_clean_and_minimal(report: DiffReport) -> None:
    g = report.guest
    assert g is not None
    assert g.head.get("kernel", "").startswith("7.2")
    assert g.startup_seconds is not None and g.startup_seconds < 30, "boot + Python start over 30 s"
    assert not g.done.get("splats"), g.done.get("splats")
    assert g.done.get("numpy_loaded") is False  # the kernel backend runs on the standard library alone
