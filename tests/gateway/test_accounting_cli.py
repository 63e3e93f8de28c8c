"""``qrmi accounting``: jobs of two users in two accounts run through a gateway, then the
command's totals, task lists, CSV, tables, time windows and plots are checked against the
gateway's usage records, task by task."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from gateway.conftest import bell
from qrmi.cli import app
from qrmi.gateway.client import finish_job, start_job
from qrmi.gateway.store import UsageRecord
from qrmi.gateway.testing import LocalGateway
from qrmi.models import TaskStatus
from qrmi.resource import QuantumResource
from qrmi.testing.munge import MungeDaemon

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the job lifecycle is root's")

runner = CliRunner()
ALICE = {"user": "alice", "account": "physics", "partition": "qpu"}
BOB = {"user": "bob", "account": "chemistry", "partition": "qpu"}


class Ran:
    """What the jobs ran: the store file and the records the gateway wrote."""

    def __init__(self, store: Path, records: list[UsageRecord]) -> None:
        self.store = str(store)
        self.records = records

    def of_job(self, job_id: str) -> list[UsageRecord]:
        return [r for r in self.records if r.slurm_job_id == job_id]


def _run_job(
    gateway: LocalGateway,
    munge: MungeDaemon,
    job_id: str,
    who: dict[str, str],
    work: list[tuple[str, float]],
    left_running: str | None = None,
) -> None:
    """Run ``work`` ((QPU, seconds) per task) to completion; leave one task running when
    ``left_running`` names a QPU, so that the job's end cancels it (a job killed mid-way)."""
    qpus = sorted({qpu for qpu, _ in work} | ({left_running} if left_running else set()))
    _, variables = start_job(
        gateway.url, job_id, 1000, qpus, 3600, munge_socket=munge.socket, accounting=who
    )
    for qpu, seconds in work:
        resource = QuantumResource(qpu, "local-emulator", environ=variables)
        task = resource.task_start(bell(seconds=seconds, shots=100))
        assert resource.task_wait(task, 60) == TaskStatus.Completed
        resource.task_result(task)
    if left_running:
        QuantumResource(left_running, "local-emulator", environ=variables).task_start(
            bell(seconds=60)
        )
    finish_job(gateway.url, job_id, munge_socket=munge.socket)


@pytest.fixture
def ran(gateway: LocalGateway, munge: MungeDaemon) -> Iterator[Ran]:
    _run_job(gateway, munge, "700", ALICE, [("emu", 0.1), ("emu2", 0.0)])
    _run_job(gateway, munge, "701", BOB, [("emu2", 0.2)], left_running="emu")
    assert gateway.service is not None
    records = gateway.service.store.usage()
    yield Ran(gateway.directory / "gateway.db", records)


def accounting(*args: str) -> Any:
    result = runner.invoke(app, ["accounting", *args], env={"COLUMNS": "250"})
    return result


def json_of(*args: str) -> Any:
    result = accounting(*args, "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def seconds_of(records: list[UsageRecord]) -> float:
    return math.fsum(r.quantum_seconds for r in records if r.quantum_seconds is not None)


def test_totals_per_account_match_the_records_task_by_task(ran: Ran) -> None:
    report = json_of("totals", "--store", ran.store, "--by", "account")

    rows = {row["account"]: row for row in report["totals"]}
    assert set(rows) == {"physics", "chemistry"}
    for account, row in rows.items():
        mine = [r for r in ran.records if r.account == account]
        assert row["tasks"] == len(mine)
        assert row["qpu_seconds"] == seconds_of(mine)
        assert row["unpriced"] == sum(1 for r in mine if r.quantum_seconds is None)
        assert row["shots"] == sum(r.shots or 0 for r in mine)
    assert rows["physics"]["tasks"] == 2 and rows["chemistry"]["tasks"] == 2
    assert report["total"]["tasks"] == 4
    assert report["total"]["qpu_seconds"] == seconds_of(ran.records)
    assert report["by"] == ["account"]


def test_by_takes_a_comma_list_or_repeats(ran: Ran) -> None:
    listed = json_of("totals", "--store", ran.store, "--by", "user,qpu")
    repeated = json_of("totals", "--store", ran.store, "--by", "user", "--by", "qpu")

    assert listed["totals"] == repeated["totals"]
    keys = {(row["user"], row["qpu"]): row["tasks"] for row in listed["totals"]}
    assert keys == {
        ("alice", "emu"): 1,
        ("alice", "emu2"): 1,
        ("bob", "emu"): 1,
        ("bob", "emu2"): 1,
    }


def test_job_lists_its_tasks_with_their_cost(ran: Ran) -> None:
    report = json_of("job", "701", "--store", ran.store)

    tasks = {task["task_id"]: task for task in report["tasks"]}
    records = {r.task_id: r for r in ran.of_job("701")}
    assert set(tasks) == set(records)
    for task_id, task in tasks.items():
        record = records[task_id]
        assert (task["qpu"], task["state"]) == (record.qpu, record.state)
        assert task["qpu_seconds"] == record.quantum_seconds
        assert task["source"] == record.usage_source
        assert (task["shots"], task["input_bytes"]) == (record.shots, record.input_bytes)
        assert task["submitted"] == datetime.fromtimestamp(record.submitted, UTC).isoformat()
    states = sorted(task["state"] for task in tasks.values())
    assert states == ["Cancelled", "Completed"]  # the job ended with one task still running
    assert report["total"]["qpu_seconds"] == seconds_of(list(records.values()))


def test_csv_has_a_header_and_a_row_per_group(ran: Ran) -> None:
    result = accounting("totals", "--store", ran.store, "--by", "qpu", "--format", "csv")

    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout)))
    header = ["qpu", "tasks", "qpu_seconds", "unpriced", "shots", "input_bytes", "result_bytes"]
    assert rows[0] == header
    assert sorted(row[0] for row in rows[1:]) == ["emu", "emu2"]
    assert sum(int(row[1]) for row in rows[1:]) == 4


def test_the_job_csv_has_one_row_per_task(ran: Ran) -> None:
    result = accounting("job", "700", "--store", ran.store, "--format", "csv")

    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert sorted(row["task_id"] for row in rows) == sorted(r.task_id for r in ran.of_job("700"))
    assert {row["account"] for row in rows} == {"physics"}


def test_tables_name_the_groups_and_the_tasks(ran: Ran) -> None:
    totals = accounting("totals", "--store", ran.store, "--by", "user,account")
    job = accounting("job", "700", "--store", ran.store)

    assert totals.exit_code == 0 and job.exit_code == 0
    assert "physics" in totals.stdout and "chemistry" in totals.stdout
    assert "QPU seconds" in totals.stdout and "QPU use from" in totals.stdout
    assert "Tasks of job 700 (user alice, account physics, partition qpu)" in job.stdout
    for record in ran.of_job("700"):
        assert record.task_id in job.stdout


def test_the_window_keeps_the_tasks_submitted_in_it(ran: Ran) -> None:
    first_job_end = max(r.submitted for r in ran.of_job("700"))
    second_job_start = min(r.submitted for r in ran.of_job("701"))
    middle = datetime.fromtimestamp((first_job_end + second_job_start) / 2, UTC)
    middle_text = middle.isoformat().replace("+00:00", "Z")

    before = json_of("totals", "--store", ran.store, "--end", middle_text)
    after = json_of("totals", "--store", ran.store, "--start", middle_text)
    tomorrow = datetime.fromtimestamp(second_job_start + 86400).date().isoformat()
    later = json_of(
        "totals", "--store", ran.store, "--start", tomorrow, "--end", tomorrow + "T12:00"
    )

    assert [row["account"] for row in before["totals"]] == ["physics"]
    assert [row["account"] for row in after["totals"]] == ["chemistry"]
    assert later["totals"] == [] and later["total"] is None


def test_the_default_window_is_the_last_seven_days(ran: Ran) -> None:
    report = json_of("totals", "--store", ran.store)

    start = datetime.fromisoformat(report["start"])
    end = datetime.fromisoformat(report["end"])
    assert (end - start).total_seconds() == pytest.approx(7 * 86400, abs=1e-5)
    assert report["total"]["tasks"] == 4


def test_plot_writes_a_png(ran: Ran, tmp_path: Path) -> None:
    target = tmp_path / "usage.png"

    result = accounting("totals", "--store", ran.store, "--plot", str(target))

    assert result.exit_code == 0, result.output
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_writes_an_svg_that_parses(ran: Ran, tmp_path: Path) -> None:
    target = tmp_path / "usage.svg"

    result = accounting("totals", "--store", ran.store, "--plot", str(target), "-o", "json")

    assert result.exit_code == 0, result.output
    root = ElementTree.parse(target).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert "physics" in target.read_text() or "chemistry" in target.read_text()
    assert json.loads(result.stdout)["total"]["tasks"] == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["totals", "--start", "yesterday"], "is not a date"),
        (["totals", "--end", "2026-02-30"], "is not a date"),
        (["totals", "--start", "2026-06-02", "--end", "2026-06-01"], "must be before --end"),
        (["totals", "--by", "colour"], "cannot group by 'colour'"),
        (["totals", "--format", "xml"], "unknown --format"),
        (["totals", "--plot", "usage.pdf"], "name a .png or .svg file"),
    ],
)
def test_bad_options_are_refused_with_the_reason(ran: Ran, args: list[str], message: str) -> None:
    result = accounting(*args, "--store", ran.store)

    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_a_missing_store_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.db"

    result = accounting("job", "1", "--store", str(missing))

    assert result.exit_code == 2
    assert f"no gateway store at {missing}" in " ".join(result.output.split())
    assert not missing.exists()  # reading never creates a store


def test_a_file_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.db"
    bogus.write_text("not a database\n" * 100)

    result = accounting("totals", "--store", str(bogus))

    assert result.exit_code == 2
    assert "cannot read the gateway store" in " ".join(result.output.split())


def test_json_flag_is_the_json_format(ran: Ran) -> None:
    flagged = accounting("totals", "--store", ran.store, "--json", "--start", "2000-01-01")
    formatted = accounting("totals", "--store", ran.store, "-o", "json", "--start", "2000-01-01")

    assert flagged.exit_code == 0, flagged.output
    assert json.loads(flagged.stdout)["totals"] == json.loads(formatted.stdout)["totals"]
