"""``vfiolab run``: the JSON result's shape, ``--list``, scenario files, and one-line errors (exit 1, no
traceback) for every kind of bad argument."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vfiolab.cli.main import main


def test_json_result_shape(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--json", "-s", "ram_mib=16", "-s", "seed=3"]) == 0
    out, err = capsys.readouterr()
    doc = json.loads(out)  # stdout is one JSON document, nothing else
    assert err == ""
    assert doc["scenario"] == "live-migration" and doc["ok"] is True and doc["failure"] is None
    assert doc["params"]["ram_mib"] == 16 and doc["params"]["seed"] == 3 and doc["params"]["trackers"] == "both"
    assert set(doc) >= {"source", "destination", "dma", "rounds", "stop_copy", "verification", "post_migration",
                        "interrupts", "workload", "elapsed_s"}
    assert set(doc["source"]["devices"]) == {"testdev", "edu"}
    assert doc["source"]["devices"]["testdev"] == {"bdf": "0000:01:00.0", "devid": doc["source"]["devices"]
                                                   ["testdev"]["devid"],
                                                   "migration_flags": ["STOP_COPY", "P2P", "PRE_COPY"]}
    assert doc["source"]["devices"]["edu"]["bdf"] == "0000:00:02.0"
    for r in doc["rounds"]:
        assert set(r) == {"round", "pages_sent", "bytes", "dirty_iommu", "dirty_dma_log", "dma_writes",
                          "precopy_info", "device_precopy_bytes"}
        assert r["bytes"] == 4096 * r["pages_sent"]
    ver = doc["verification"]
    assert ver["lost_pages"] == 0 and ver["lost_page_numbers"] == []
    assert len(ver["ram_sha256"]["source"]) == 64 and ver["ram_sha256"]["source"] == ver["ram_sha256"]["destination"]
    assert isinstance(doc["elapsed_s"], float)


def test_text_output_names_rounds_and_the_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "live-migration", "-s", "ram_mib=16"]) == 0
    out = capsys.readouterr().out
    assert "round  pages sent" in out and "    0        4096    16.0" in out
    assert ": 0 lost pages;" in out and out.rstrip().endswith("devices continue on the destination")


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--list"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("live-migration (default): ")
    assert "    ram_mib=128 (16..1024): guest RAM in MiB" in out
    assert "break_transfer=none (none|skip-harvest|skip-final)" in out
    assert main(["run", "--list", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc[0]["name"] == "live-migration" and doc[0]["default"] is True
    assert {"name": "trackers", "default": "both", "help": "dirty trackers harvested", "min": None, "max": None,
            "choices": ["both", "iommu", "dma-log"]} in doc[0]["params"]


def test_scenario_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "mig.yaml"
    f.write_text("scenario: live-migration\nparams:\n  ram_mib: 16\n  seed: 9\n")
    assert main(["run", str(f), "--json", "-s", "seed=11"]) == 0  # the command line wins over the file
    doc = json.loads(capsys.readouterr().out)
    assert doc["params"]["ram_mib"] == 16 and doc["params"]["seed"] == 11


@pytest.mark.parametrize(("argv", "message"), [
    (["run", "nope"], "unknown scenario 'nope'; built-in: live-migration"),
    (["run", "-s", "foo=1"], "live-migration: unknown parameter 'foo'; known: ram_mib, seed,"),
    (["run", "-s", "ram_mib=8"], "live-migration: parameter ram_mib: 8 is outside 16..1024"),
    (["run", "-s", "ram_mib=lots"], "live-migration: parameter ram_mib: 'lots' is not an integer"),
    (["run", "-s", "trackers=cpu"], "live-migration: parameter trackers: 'cpu' is not one of both, iommu, dma-log"),
    (["run", "-s", "ram_mib"], "--set 'ram_mib': expected KEY=VALUE"),
    (["run", "-s", "=3"], "--set '=3': expected KEY=VALUE"),
    (["run", "missing.yaml"], "missing.yaml: cannot read scenario file: No such file or directory"),
    (["run", ""], "empty scenario name; built-in: live-migration"),
])
def test_bad_arguments(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"vfiolab: {message}") and err.count("\n") == 1


@pytest.mark.parametrize(("text", "message"), [
    ("- 1\n- 2\n", "a scenario file is a mapping"),
    ("scenario: live-migration\nextra: 1\n", "unknown key 'extra'"),
    ("params: {}\n", "'scenario' must name a built-in scenario"),
    ("scenario: other\n", "unknown scenario 'other'"),
    ("scenario: live-migration\nparams: [1]\n", "'params' must be a mapping"),
    ("scenario: live-migration\nparams: {ram_mib: true}\n", "parameter ram_mib: True is not an integer"),
    ("scenario: [live\n", "not valid YAML"),
    ("scenario: live-migration\nscenario: x\n", "bad.yaml:2:1: not valid YAML: key 'scenario' given twice"),
    ("scenario: live-migration\nparams: {seed: 1, seed: 2}\n", "key 'seed' given twice (first on line 2)"),
])
def test_bad_scenario_files(tmp_path: Path, text: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    assert main(["run", str(f)]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_demo_ends_with_the_migration_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    tail = out[out.index("== VFIO live migration under DMA"):].splitlines()
    assert tail[1].startswith("migrated testdev + edu, 64 MiB guest RAM, from pid ")
    assert tail[2].startswith("pre-copy rounds: ") and "pages sent per round: 16384, " in tail[2]
    assert tail[3] == "0 lost pages; device state equal; devices continue on the destination"
