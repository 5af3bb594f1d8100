"""Cycles SDK recovery conformance (profile ``cycles-sdk-recovery`` 0.3): runner and adapter.

Runner (writes the evidence report; exits 0 only when every claimed scenario passes)::

    uv run python conformance/recovery.py --report recovery-conformance.json

It follows the official runner (``scripts/run_client_recovery_conformance.py`` of
``runcycles/cycles-protocol``): for each scenario of the claim it starts the
adapter in a fresh process as ``<adapter command> <SCENARIO_ID>`` with the
scenario's ``id``, ``level``, ``name``, ``precondition`` and ``faults`` on stdin
(never ``expected_requests`` or ``assertions``), checks the one JSON document the
adapter prints, and writes a report that validates against
``vectors/report.schema.json``.

Adapter (also usable with the official runner:
``--adapter python conformance/recovery.py adapter``)::

    python conformance/recovery.py adapter CR-CORE-001 < scenario.json

It maps the scenario to the exact native pytest node ids in :data:`NATIVE_TESTS`,
runs them (each test on asyncio and trio) with the repository root as working
directory, copies pytest's output to stderr and prints
``{"scenario_id", "passed", "native_tests", "diagnostic"}``.

The catalogue is the vendored copy in ``vectors/`` (see ``vectors/SOURCE.md``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import cast

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CATALOG = HERE / "vectors" / "scenarios.yaml"
SCHEMA_ID = (
    "https://raw.githubusercontent.com/runcycles/cycles-protocol/main/client-recovery/"
    "report.schema.json"
)
PROFILE_COMMIT = "f2ffee94ba0887977dbd8851a3e1ca443a1d7610"
"""The protocol repository commit the vendored catalogue was copied from."""
CATALOG_SHA256 = "28792ca09104ba04d0a9bd6ae922e6d9581af94d14807eab2b5ad2e50ba5bd72"
"""The catalogue digest every SDK's report for profile 0.3 carries."""

STDIN_KEYS = ("id", "level", "name", "precondition", "faults")
ORACLE_KEYS = ("expected_requests", "assertions")
LEVELS_BY_CLAIM = {"core": ("core", "boundary"), "durable": ("core", "durable", "boundary")}

_SETTLEMENT = "tests/settlement/test_settlement.py"
_RECOVERY = "tests/settlement/test_recovery.py"
_RESTART = "tests/settlement/test_process_restart.py"
_JOURNAL = "tests/settlement/test_journal.py"
_FORMAT = "tests/core/test_journal_format.py"

NATIVE_TESTS: dict[str, tuple[str, ...]] = {
    "CR-CORE-001": (
        f"{_SETTLEMENT}::test_lost_commit_response_is_retried_with_the_original_key",
        f"{_SETTLEMENT}::test_timeouts_and_5xx_are_retried_until_success",
    ),
    "CR-CORE-002": (
        f"{_SETTLEMENT}::test_expired_commit_falls_back_to_an_event_with_the_same_key",
        f"{_FORMAT}::test_event_fallback_carries_original_subject_action_actual",
    ),
    # Heartbeat (lease work): extend fails with a transport error, is retried with the
    # same key, is reported with the reservation id and "retrying", the work goes on and
    # the commit is made.
    "CR-CORE-003": (
        "tests/test_heartbeat.py::test_transport_failures_are_observable_and_not_fatal",
    ),
    "CR-CORE-004": (
        f"{_SETTLEMENT}::test_nonconformant_success_is_ambiguous_and_keeps_the_key",
        f"{_SETTLEMENT}::test_only_a_201_settles_an_event",
    ),
    "CR-DURABLE-001": (
        f"{_RESTART}::test_killed_worker_commit_is_settled_once_after_restart",
        f"{_RECOVERY}::test_killed_first_commit_is_replayed_once_after_restart",
        f"{_SETTLEMENT}::test_the_record_is_on_disk_before_the_first_request",
        f"{_SETTLEMENT}::test_lost_commit_response_is_retried_with_the_original_key",
    ),
    "CR-DURABLE-002": (
        f"{_RECOVERY}::test_replayed_expired_commit_switches_durably_to_event_mode",
        f"{_RECOVERY}::test_an_event_mode_record_from_a_previous_run_sends_only_the_event",
        f"{_SETTLEMENT}::test_event_mode_is_journaled_before_the_event_is_sent",
    ),
    "CR-DURABLE-003": (
        f"{_RECOVERY}::test_rate_limit_floor_survives_restart",
        f"{_SETTLEMENT}::test_429_persists_an_absolute_floor_and_waits_for_it",
        f"{_RECOVERY}::test_a_far_floor_is_deferred_to_a_later_pass",
        f"{_SETTLEMENT}::test_a_hostile_retry_after_is_clamped_to_an_hour",
    ),
    "CR-DURABLE-004": (
        f"{_RECOVERY}::test_tenant_journal_survives_api_key_rotation",
        f"{_FORMAT}::test_fingerprint_vectors_shared_by_every_sdk",
    ),
    "CR-DURABLE-005": (
        f"{_JOURNAL}::test_corrupt_and_unsupported_records_are_quarantined",
        f"{_RECOVERY}::test_replay_quarantines_and_still_settles_valid_records",
        f"{_FORMAT}::test_malformed_or_unsupported_records_are_refused",
    ),
    "CR-DURABLE-006": (
        f"{_RESTART}::test_two_worker_processes_replay_one_record_exactly_once",
        f"{_RECOVERY}::test_concurrent_replay_by_independent_workers_is_exactly_once",
    ),
    "CR-DURABLE-007": (
        f"{_FORMAT}::test_standard_filename_is_sha256_of_exact_utf8_identifier",
        f"{_JOURNAL}::test_distinct_identifiers_get_distinct_files",
        f"{_JOURNAL}::test_matching_legacy_record_migrates_without_deleting_collision",
    ),
    # Guarded call (lease work): the guarded function fails, so no actual is known; the
    # failure is returned and no commit is sent.
    "CR-BOUNDARY-001": (
        "tests/test_guarded.py::test_callers_failure_is_returned_unchanged_and_released",
    ),
}
"""Each scenario's exact native tests (pytest node ids; every one runs on asyncio and trio)."""

Scenario = dict[str, object]


# The catalogue ---------------------------------------------------------------------------------


def catalog_text() -> str:
    """The catalogue as text with CRLF and lone CR turned into LF."""
    raw = CATALOG.read_bytes().decode("utf-8")
    return raw.replace("\r\n", "\n").replace("\r", "\n")


def catalog_sha256() -> str:
    """The profile's catalogue digest (line endings normalised), as every SDK reports it."""
    return hashlib.sha256(catalog_text().encode("utf-8")).hexdigest()


def load_catalog() -> tuple[str, str, list[Scenario]]:
    """The profile name, its version (a string) and the scenarios, in catalogue order."""
    document = cast("dict[str, object]", yaml.safe_load(catalog_text()))
    scenarios = cast("list[Scenario]", document["scenarios"])
    return str(document["profile"]), str(document["version"]), scenarios


# The adapter ---------------------------------------------------------------------------------


def _refuse(message: str) -> int:
    print(f"recovery adapter: {message}", file=sys.stderr)
    return 2


def adapter(scenario_id: str, stdin: str) -> int:
    """Run one scenario's native tests; print exactly one JSON document on stdout."""
    try:
        given = json.loads(stdin)
    except ValueError as error:
        return _refuse(f"stdin is not JSON: {error}")
    if not isinstance(given, dict):
        return _refuse("stdin is not a JSON object")
    scenario = cast("dict[str, object]", given)
    leaked = [key for key in ORACLE_KEYS if key in scenario]
    if leaked:
        return _refuse(f"the runner must not send the oracle ({', '.join(leaked)})")
    if scenario.get("id") != scenario_id:
        return _refuse(f"argument {scenario_id!r} and stdin id {scenario.get('id')!r} disagree")
    if scenario_id not in NATIVE_TESTS:
        return _refuse(f"unknown scenario {scenario_id!r}")
    tests = NATIVE_TESTS[scenario_id]
    completed = subprocess.run(  # noqa: S603 - fixed argv: this interpreter, pytest, our node ids
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    sys.stderr.write(completed.stdout)
    sys.stderr.write(completed.stderr)
    result = {
        "scenario_id": scenario_id,
        "passed": completed.returncode == 0,
        "native_tests": list(tests),
        "diagnostic": f"native pytest exit code {completed.returncode}",
    }
    print(json.dumps(result))
    return 0


# The runner ----------------------------------------------------------------------------------


def _git_head(directory: Path) -> str | None:
    try:
        completed = subprocess.run(
            ["git", "rev-parse", "HEAD"],  # noqa: S607 - git from PATH, as the official runner
            cwd=directory,
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return None
    head = completed.stdout.strip()
    return head if completed.returncode == 0 and head else None


def _check_result(
    scenario_id: str, completed: subprocess.CompletedProcess[str]
) -> str | dict[str, object]:
    """The adapter's result, or why the scenario fails (in the official runner's order)."""
    if completed.returncode != 0:
        shown = (completed.stderr or completed.stdout).strip()
        return f"adapter exited {completed.returncode}: {shown}"
    try:
        result: object = json.loads(completed.stdout)
    except ValueError:
        return "adapter stdout is not valid JSON"
    if not isinstance(result, dict):
        return "adapter result is not an object"
    fields = cast("dict[str, object]", result)
    if fields.get("scenario_id") != scenario_id:
        return f"adapter reported scenario {fields.get('scenario_id')!r}"
    if fields.get("passed") is not True:
        diagnostic = fields.get("diagnostic")
        if isinstance(diagnostic, str) and diagnostic:
            return diagnostic
        return "adapter reported failure"
    raw_tests = fields.get("native_tests")
    if not isinstance(raw_tests, list):
        return "native_tests must be a non-empty list of non-blank strings"
    tests = cast("list[object]", raw_tests)
    if not tests or not all(isinstance(t, str) and t.strip() for t in tests):
        return "native_tests must be a non-empty list of non-blank strings"
    if len({str(t) for t in tests}) != len(tests):
        return "native_tests contains duplicates"
    return fields


def run_scenario(
    scenario: Scenario, adapter_command: list[str], timeout: float, *, verbose: bool = False
) -> dict[str, object]:
    """One report entry: start the adapter, feed it the scenario, judge what it printed.

    The adapter's stderr (the native test output) is shown for failures, or always
    with ``verbose``.
    """
    scenario_id = str(scenario["id"])
    entry: dict[str, object] = {
        "id": scenario_id,
        "level": scenario["level"],
        "name": scenario["name"],
    }
    stdin = json.dumps({key: scenario[key] for key in STDIN_KEYS})
    try:
        completed = subprocess.run(  # noqa: S603 - the adapter command is the operator's
            [*adapter_command, scenario_id],
            cwd=Path.cwd(),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        checked: str | dict[str, object] = f"adapter ran longer than {timeout:g} s"
    else:
        checked = _check_result(scenario_id, completed)
        if isinstance(checked, str) or verbose:
            sys.stderr.write(completed.stderr)
    if isinstance(checked, str):
        print(f"FAIL {scenario_id}: {checked}", file=sys.stderr)
        entry.update(passed=False, native_tests=[], diagnostic=f"{scenario_id}: {checked}")
        return entry
    print(f"PASS {scenario_id}: {scenario['name']}")
    entry.update(passed=True, native_tests=checked["native_tests"])
    diagnostic = checked.get("diagnostic")
    if isinstance(diagnostic, str) and diagnostic:
        entry["diagnostic"] = diagnostic
    return entry


def write_report(path: Path, report: dict[str, object]) -> None:
    """Write atomically: ``.<name>.<pid>.tmp`` next to the target, then replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def runner(args: argparse.Namespace) -> int:
    """Run the claim's scenarios through the adapter; write the report; 0 only if all pass."""
    profile, version, scenarios = load_catalog()
    claimed = [s for s in scenarios if s["level"] in LEVELS_BY_CLAIM[args.claim]]
    if args.scenario:
        known = {str(s["id"]) for s in claimed}
        outside = [sid for sid in args.scenario if sid not in known]
        if outside:
            print(
                f"scenario(s) {', '.join(outside)} outside the {args.claim} claim or unknown",
                file=sys.stderr,
            )
            return 1
        claimed = [s for s in claimed if s["id"] in args.scenario]
    adapter_command = args.adapter or [sys.executable, str(Path(__file__).resolve()), "adapter"]
    # Each adapter is its own process; with --jobs > 1 several run at once. The
    # report keeps catalogue order either way.
    timeout = cast("float", args.timeout)
    verbose = cast("bool", args.verbose)

    def one(scenario: Scenario) -> dict[str, object]:
        return run_scenario(scenario, adapter_command, timeout, verbose=verbose)

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        entries = list(pool.map(one, claimed))
    passed = sum(1 for entry in entries if entry["passed"] is True)
    digest = catalog_sha256()
    implementation: dict[str, object] = {
        "id": args.implementation or os.environ.get("GITHUB_REPOSITORY") or ROOT.name,
        "commit": args.implementation_commit
        or os.environ.get("GITHUB_SHA")
        or _git_head(ROOT)
        or "unknown",
    }
    if args.implementation_version:
        implementation["version"] = args.implementation_version
    report: dict[str, object] = {
        "$schema": SCHEMA_ID,
        "schema_version": "1.0",
        "generated_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "profile": {
            "name": profile,
            "version": version,
            # The vendored catalogue is the one at PROFILE_COMMIT only if its digest says so.
            "commit": PROFILE_COMMIT if digest == CATALOG_SHA256 else "unknown",
            "catalog_sha256": digest,
        },
        "claim": args.claim,
        "implementation": implementation,
    }
    evidence_url = args.evidence_url or _github_run_url()
    if evidence_url:
        report["evidence_url"] = evidence_url
    report["summary"] = {"total": len(entries), "passed": passed, "failed": len(entries) - passed}
    report["scenarios"] = entries
    if args.report is not None:
        try:
            write_report(args.report, report)
        except OSError as error:
            print(f"could not write the report {args.report}: {error}", file=sys.stderr)
            return 1
    if passed == len(entries):
        print(f"Passed {len(entries)} {args.claim} recovery scenarios.")
        return 0
    print(f"{len(entries) - passed} of {len(entries)} recovery scenarios failed.", file=sys.stderr)
    return 1


def _github_run_url() -> str | None:
    parts = [
        os.environ.get(name) for name in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID")
    ]
    if not all(parts):
        return None
    server, repository, run_id = parts
    return f"{server}/{repository}/actions/runs/{run_id}"


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The runner's command line: the official runner's flags (``--report-json`` is
    accepted as an alias of ``--report``)."""
    parser = argparse.ArgumentParser(description="Cycles SDK recovery conformance runner")
    parser.add_argument("--claim", choices=sorted(LEVELS_BY_CLAIM), default="durable")
    parser.add_argument("--scenario", action="append", default=[], metavar="ID")
    parser.add_argument("--timeout", type=_positive, default=300.0, metavar="S")
    parser.add_argument("--report", "--report-json", type=Path, default=None, metavar="PATH")
    parser.add_argument("--implementation", default=None)
    parser.add_argument("--implementation-version", default=None)
    parser.add_argument("--implementation-commit", default=None)
    parser.add_argument("--evidence-url", default=None)
    parser.add_argument(
        "--jobs", type=int, default=1, metavar="N", help="adapters to run at once (default 1)"
    )
    parser.add_argument(
        "--verbose", action="store_true", help="show the native test output of passing scenarios"
    )
    parser.add_argument(
        "--adapter",
        nargs=argparse.REMAINDER,
        default=None,
        help="adapter command (must come last); default: this script's own adapter",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """``adapter <ID>`` runs the adapter; anything else runs the runner."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["adapter"]:
        if len(args) < 2:
            return _refuse("usage: recovery.py adapter <SCENARIO_ID>")
        return adapter(args[-1], sys.stdin.read())
    return runner(parse_args(args))


if __name__ == "__main__":
    sys.exit(main())
