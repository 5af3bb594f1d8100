"""The recovery conformance runner: all 12 scenarios, a schema-valid report, the adapter protocol.

The full run (``conformance/recovery.py --report PATH``, claim ``durable``) happens
once per session; each scenario's native tests run in a fresh process, on asyncio
and trio.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import cast

import attrs
import jsonschema
import pytest
from conformance.recovery import (
    CATALOG_SHA256,
    NATIVE_TESTS,
    catalog_sha256,
    load_catalog,
)

ROOT = Path(__file__).parents[1]
RUNNER = ROOT / "conformance" / "recovery.py"
VECTORS = ROOT / "conformance" / "vectors"
SHARED = ROOT.parent / "shared" / "spec" / "vectors" / "client-recovery"
SCHEMA = cast("dict[str, object]", json.loads((VECTORS / "report.schema.json").read_text()))

LEAD_OWNED = ("CR-CORE-003", "CR-BOUNDARY-001")
"""Scenarios whose native tests belong to the lease/heartbeat/guarded-call work
(``tests/test_heartbeat.py``, ``tests/test_guarded.py``)."""

Json = dict[str, object]


@attrs.frozen
class Run:
    """One runner invocation: exit code, output and the report it wrote (if any)."""

    returncode: int
    stdout: str
    stderr: str
    report: Json | None


def run(tmp: Path, *args: str, stdin: str | None = None) -> Run:
    report = tmp / "out" / "recovery-conformance.json"
    completed = subprocess.run(
        [sys.executable, str(RUNNER), "--report", str(report), *args],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    body = cast("Json", json.loads(report.read_text())) if report.exists() else None
    return Run(completed.returncode, completed.stdout, completed.stderr, body)


def adapter(scenario_id: str, stdin: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RUNNER), "adapter", scenario_id],
        cwd=ROOT,
        input=json.dumps(stdin),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def validate(report: Json) -> None:
    validator = jsonschema.Draft202012Validator(
        SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    # jsonschema's stubs type instances as a private JSON alias; reports come from json.loads.
    errors = validator.iter_errors(cast("dict[str, str]", report))  # pyright: ignore[reportUnknownMemberType]
    assert [str(error.message) for error in errors] == []


def scenarios_of(report: Json) -> list[Json]:
    return cast("list[Json]", report["scenarios"])


def node_exists(node_id: str) -> bool:
    path, _, name = node_id.partition("::")
    file = ROOT / path
    return file.is_file() and f"def {name.split('[')[0]}(" in file.read_text()


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The durable claim, all 12 scenarios, as CI would run it (two adapters at a time)."""
    return run(tmp_path_factory.mktemp("recovery"), "--jobs", "2")


# The full run ----------------------------------------------------------------------------------


def test_report_validates_against_the_profile_schema(full_run: Run) -> None:
    """The report matches ``report.schema.json`` and describes the vendored catalogue."""
    report = full_run.report
    assert report is not None, full_run.stderr
    validate(report)
    _, version, catalog = load_catalog()
    assert report["claim"] == "durable"
    assert report["profile"] == {
        "name": "cycles-sdk-recovery",
        "version": version,
        "commit": "f2ffee94ba0887977dbd8851a3e1ca443a1d7610",
        "catalog_sha256": CATALOG_SHA256,
    }
    assert [s["id"] for s in scenarios_of(report)] == [s["id"] for s in catalog]
    assert len(catalog) == 12
    summary = cast("Json", report["summary"])
    passed = sum(1 for s in scenarios_of(report) if s["passed"] is True)
    assert summary == {"total": 12, "passed": passed, "failed": 12 - passed}


def test_exit_code_is_zero_only_when_every_scenario_passes(full_run: Run) -> None:
    """Exit 0 with all 12 passed; exit 1 with any failure, and the report still written."""
    assert full_run.report is not None
    failed = cast("Json", full_run.report["summary"])["failed"]
    assert (full_run.returncode == 0) == (failed == 0)
    if failed:
        assert f"{failed} of 12 recovery scenarios failed." in full_run.stderr
    else:
        assert "Passed 12 durable recovery scenarios." in full_run.stdout


def test_settlement_scenarios_pass_with_their_exact_native_tests(full_run: Run) -> None:
    """Every scenario but the two lifecycle ones passes and names exactly its native tests."""
    assert full_run.report is not None
    for scenario in scenarios_of(full_run.report):
        if scenario["id"] in LEAD_OWNED:
            continue
        assert scenario["passed"] is True, scenario
        assert scenario["native_tests"] == list(NATIVE_TESTS[str(scenario["id"])])
        assert scenario["diagnostic"] == "native pytest exit code 0"


def test_all_twelve_scenarios_pass(full_run: Run) -> None:
    """The durable claim holds: 12 of 12, exit code 0."""
    missing = [node for sid in LEAD_OWNED for node in NATIVE_TESTS[sid] if not node_exists(node)]
    assert missing == [], (
        "CR-CORE-003 and CR-BOUNDARY-001 are bound to lease/heartbeat/guarded-call tests "
        "that no longer exist; rebind them in conformance/recovery.py, NATIVE_TESTS"
    )
    assert full_run.report is not None
    failures = [s for s in scenarios_of(full_run.report) if s["passed"] is not True]
    assert failures == []
    assert full_run.returncode == 0


def test_every_native_test_exists(full_run: Run) -> None:
    """Each bound node id names a real test function (renaming one fails the scenario)."""
    del full_run  # only orders this after the run
    for scenario_id, nodes in NATIVE_TESTS.items():
        assert len(set(nodes)) == len(nodes)
        for node in nodes:
            # The lifecycle scenarios' tests are checked by test_all_twelve_scenarios_pass.
            assert node_exists(node) or scenario_id in LEAD_OWNED, node


# The runner's failure paths --------------------------------------------------------------------

FAILING_ADAPTERS = {
    "reports failure": (
        (
            "import json,sys; print(json.dumps({'scenario_id': sys.argv[-1], 'passed': False,"
            " 'native_tests': ['x'], 'diagnostic': 'native pytest exit code 1'}))"
        ),
        "CR-CORE-001: native pytest exit code 1",
    ),
    "prints no JSON": ("print('hello')", "CR-CORE-001: adapter stdout is not valid JSON"),
    "exits non-zero": (
        "import sys; sys.stderr.write('boom'); sys.exit(3)",
        "CR-CORE-001: adapter exited 3: boom",
    ),
    "wrong scenario": (
        (
            "import json; print(json.dumps({'scenario_id': 'CR-CORE-002', 'passed': True,"
            " 'native_tests': ['x']}))"
        ),
        "CR-CORE-001: adapter reported scenario 'CR-CORE-002'",
    ),
    "duplicate tests": (
        (
            "import json,sys; print(json.dumps({'scenario_id': sys.argv[-1], 'passed': True,"
            " 'native_tests': ['x', 'x']}))"
        ),
        "CR-CORE-001: native_tests contains duplicates",
    ),
    "no tests": (
        (
            "import json,sys; print(json.dumps({'scenario_id': sys.argv[-1], 'passed': True,"
            " 'native_tests': []}))"
        ),
        "CR-CORE-001: native_tests must be a non-empty list of non-blank strings",
    ),
}


@pytest.mark.parametrize(
    ("code", "diagnostic"), FAILING_ADAPTERS.values(), ids=FAILING_ADAPTERS.keys()
)
def test_a_failed_scenario_is_reported_without_evidence(
    tmp_path: Path, code: str, diagnostic: str
) -> None:
    """A failing adapter result becomes ``passed: false``, no native tests, and the reason."""
    result = run(tmp_path, "--scenario", "CR-CORE-001", "--adapter", sys.executable, "-c", code)
    assert result.returncode == 1
    assert result.report is not None
    validate(result.report)
    assert scenarios_of(result.report) == [
        {
            "id": "CR-CORE-001",
            "level": "core",
            "name": "lost commit response reuses the same key",
            "passed": False,
            "native_tests": [],
            "diagnostic": diagnostic,
        }
    ]
    assert result.report["summary"] == {"total": 1, "passed": 0, "failed": 1}


def test_a_passing_adapter_result_is_copied(tmp_path: Path) -> None:
    """A passing result keeps its native tests and diagnostic; the claim filter applies."""
    code = (
        "import json,sys; s=json.loads(sys.stdin.read());"
        " assert list(s)==['id','level','name','precondition','faults'], s;"
        " print(json.dumps({'scenario_id': s['id'], 'passed': True,"
        " 'native_tests': ['t::a', 't::b'], 'diagnostic': 'ok', 'extra': 1}))"
    )
    result = run(
        tmp_path,
        "--claim",
        "core",
        "--scenario",
        "CR-BOUNDARY-001",
        "--implementation",
        "cycleguard",
        "--implementation-version",
        "0.1.0",
        "--implementation-commit",
        "abc123",
        "--evidence-url",
        "https://ci.example/runs/1",
        "--adapter",
        sys.executable,
        "-c",
        code,
    )
    assert result.returncode == 0, result.stderr
    assert result.report is not None
    validate(result.report)
    assert result.report["claim"] == "core"
    assert result.report["implementation"] == {
        "id": "cycleguard",
        "commit": "abc123",
        "version": "0.1.0",
    }
    assert result.report["evidence_url"] == "https://ci.example/runs/1"
    assert scenarios_of(result.report)[0]["native_tests"] == ["t::a", "t::b"]
    assert scenarios_of(result.report)[0]["diagnostic"] == "ok"
    assert "PASS CR-BOUNDARY-001: missing actual is surfaced without settlement" in result.stdout


def test_a_scenario_outside_the_claim_is_refused(tmp_path: Path) -> None:
    """``--scenario`` outside the claim (or unknown): exit 1, no report."""
    result = run(tmp_path, "--claim", "core", "--scenario", "CR-DURABLE-001")
    assert result.returncode == 1
    assert "outside the core claim or unknown" in result.stderr
    assert result.report is None


# The adapter protocol ----------------------------------------------------------------------------


def catalog_entry(scenario_id: str) -> Json:
    _, _, catalog = load_catalog()
    (entry,) = [s for s in catalog if s["id"] == scenario_id]
    return entry


def test_the_adapter_refuses_the_oracle() -> None:
    """``expected_requests``/``assertions`` on stdin: refuse with exit 2, run nothing."""
    completed = adapter("CR-CORE-001", catalog_entry("CR-CORE-001"))
    assert completed.returncode == 2
    assert "oracle" in completed.stderr
    assert completed.stdout == ""


@pytest.mark.parametrize(
    ("argument", "stdin_id"),
    [("CR-CORE-001", "CR-CORE-002"), ("CR-CORE-999", "CR-CORE-999")],
    ids=["id mismatch", "unknown id"],
)
def test_the_adapter_refuses_inconsistent_ids(argument: str, stdin_id: str) -> None:
    """The argument and stdin must agree, and the id must be known: else exit 2."""
    stdin: Json = {"id": stdin_id, "level": "core", "name": "x", "precondition": "p", "faults": []}
    completed = adapter(argument, stdin)
    assert completed.returncode == 2
    assert completed.stdout == ""


def test_the_adapter_prints_exactly_one_json_document() -> None:
    """Stdout is one JSON object naming the exact tests; pytest's output goes to stderr."""
    entry = catalog_entry("CR-DURABLE-007")
    stdin = {key: entry[key] for key in ("id", "level", "name", "precondition", "faults")}
    completed = adapter("CR-DURABLE-007", stdin)
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    assert result == {
        "scenario_id": "CR-DURABLE-007",
        "passed": True,
        "native_tests": list(NATIVE_TESTS["CR-DURABLE-007"]),
        "diagnostic": "native pytest exit code 0",
    }
    assert "passed" in completed.stderr


# The vendored catalogue ----------------------------------------------------------------------


def test_the_catalogue_digest_is_the_published_one() -> None:
    """The vendored catalogue is the profile 0.3 catalogue every SDK reports."""
    assert catalog_sha256() == CATALOG_SHA256


@pytest.mark.parametrize("name", ["scenarios.yaml", "report.schema.json"])
def test_vendored_files_are_verbatim_copies(name: str) -> None:
    """Byte-identical to the shared snapshot, when it is present."""
    if not (SHARED / name).is_file():
        pytest.skip(f"shared snapshot {SHARED} is not present")
    assert (VECTORS / name).read_bytes() == (SHARED / name).read_bytes()
