"""What the Slurm tests share: the running cluster and the QPUs' books."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from qrmi.testing.slurm_cluster import SlurmCluster

SECRET = "sup3r-s3cret-api-key"


@dataclass
class Lab:
    """The running cluster plus where its QPUs keep their books."""

    cluster: SlurmCluster
    ledger: Path
    emulators: dict[str, Path]

    def ledger_events(self, qpu: str, job_id: int | None = None) -> list[tuple[str, str]]:
        """``(event, token)`` pairs recorded by the ledger QPU ``qpu`` (for one job)."""
        path = self.ledger / f"{qpu}.log"
        events = []
        for line in path.read_text().splitlines() if path.exists() else []:
            event, token, job = line.split()
            if job_id is None or job == f"job={job_id}":
                events.append((event, token))
        return events

    def emulator_leases(self, qpu: str) -> list[tuple[str, int]]:
        """``(token, release_count)`` of every lease the emulator ``qpu`` issued."""
        from qrmi.backends.local_emulator.store import TaskStore

        return [
            (lease.token, lease.release_count) for lease in TaskStore(self.emulators[qpu]).leases()
        ]

    def leftover_state(self) -> list[str]:
        """Jobs with helper state left in the cluster's state dir."""
        jobs = self.cluster.state_dir / "jobs"
        return sorted(p.name for p in jobs.glob("*.json")) if jobs.exists() else []
