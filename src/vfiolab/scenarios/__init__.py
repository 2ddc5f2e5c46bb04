"""End-to-end scenarios run by ``vfiolab run``: the runner (:mod:`.runner`: names, parameters, scenario
files, results) and the built-in scenarios, each in its own module (``live-migration``:
:mod:`.live_migration`, with the machine, VMM, guest drivers, device pre-copy, migration channel and
destination process it is built from).  Scenario modules are imported only when a scenario runs."""

from vfiolab.scenarios.runner import BUILTIN, DEFAULT, Param, Scenario, ScenarioResult, get, select

__all__ = ["BUILTIN", "DEFAULT", "Param", "Scenario", "ScenarioResult", "get", "select"]
