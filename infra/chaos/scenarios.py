"""The fault scenarios of issue 8 and the drill that runs them against fresh embedded stacks.

A scenario imports a seeded users CSV in the reference shape (infra/tools/datagen.py, with its usual dirt; or
articles or comments, after the rows they point at) through a presigned upload, injects its fault, waits for the
job to end (giving up `give_up_seconds` after the fault: the job is then reported stuck) and compares the outcome
with a clean run of the same files on another fresh stack. Faults fire at deterministic points (bulkio/faults.py)
wherever the pipeline has one; the database restart and the Ctrl-C fire once import_chunks holds a share of the
job's chunks (FAULT_SHARE), measured in the database; the `-kill` variants send a real SIGKILL to the workers
found by their process.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from infra.chaos.api import FINAL_STATUSES, Api, ApiError
from infra.chaos.outcome import JobOutcome, Outcome, table_digests
from infra.chaos.stack import STRAGGLER_SECONDS, ChaosStack, StackError, faults
from infra.local.stack import REPOSITORY_ROOT
from infra.tools import datagen

FAULT_SHARE = 0.4  # share of the job's chunks after which the chunker dies, the database restarts, Ctrl-C comes
WRITER_KILL_STEP = 0.15  # writers die after 15 %, 30 %, 45 % and 60 % of the chunks
WRITER_KILLS = 4
# (f): the exports start when 90 % of the concurrent imports' chunks are staged, near the merges.
EXPORTS_AT_SHARE = 0.9
POLL_SECONDS = 0.05
DB_POLL_SECONDS = 0.2
JOB_CHECK_SECONDS = 2.0


class FaultMissed(RuntimeError):
    """The fault could not be injected as the scenario means it (the job ended first, no worker found...)."""


@dataclass
class DrillSettings:
    work_dir: Path
    rows: int = 200_000
    seed: int = 42
    give_up_seconds: float = 300.0  # after the fault; a job still running then is stuck
    finish_within_seconds: float | None = 120.0  # the promise of issue 8; None: not checked
    keep_state: bool = False
    log: Callable[[str], None] = print
    source_root: Path = REPOSITORY_ROOT  # the code the stacks run
    resource: str = "users"  # what the faulted import loads (articles and comments: their references first)


@dataclass
class ScenarioResult:
    key: str
    title: str
    expected: str = "-"
    observed: str = "-"
    seconds_after_fault: float | None = None
    ended: bool = False
    problems: list[str] = field(default_factory=list)  # why it fails
    notes: list[str] = field(default_factory=list)  # what else was seen
    kept: Path | None = None  # state folder or logs kept for a look

    @property
    def passed(self) -> bool:
        return self.ended and not self.problems

    def report(self) -> str:
        lines = [f"{self.key}: {self.title}: {'PASS' if self.passed else 'FAIL'}"]
        lines += [f"  expected  {self.expected}", f"  observed  {self.observed}"]
        if self.seconds_after_fault is not None:
            lines.append(f"  finished {self.seconds_after_fault:.1f} s after the fault")
        lines += [f"  problem: {problem}" for problem in self.problems]
        lines += [f"  note: {note}" for note in self.notes]
        if self.kept:
            lines.append(f"  kept: {self.kept}")
        return "\n".join(lines)


@dataclass
class Baseline:
    outcome: Outcome
    chunks: tuple[int, ...]  # chunks_total of each job
    seconds: float  # upload to end of the last job


@dataclass
class Trial:
    """One scenario in progress on its stack."""

    drill: Drill
    stack: ChaosStack
    api: Api
    result: ScenarioResult
    chunks: int  # the job's chunks in the clean run
    job_id: str = ""
    uploaded_at: float = 0.0
    fault_at: float | None = None

    def log(self, text: str) -> None:
        self.drill.log(f"[{self.result.key}] {text}")

    def since_upload(self) -> str:
        return f"{time.monotonic() - self.uploaded_at:.1f} s after the upload"

    def job_ended(self) -> bool:
        job = self.api.job(self.job_id)
        return job is not None and job["status"] in FINAL_STATUSES

    def wait_fired(self, point: str) -> float:
        """Waits until the armed crash point fires (its file is gone); the moment it did."""
        deadline = time.monotonic() + self.drill.settings.give_up_seconds
        next_check = time.monotonic() + JOB_CHECK_SECONDS
        while time.monotonic() < deadline:
            if not self.stack.armed(point):
                fired = time.monotonic()
                self.log(f"{point} fired {self.since_upload()}")
                return fired
            if time.monotonic() >= next_check:
                if self.job_ended():
                    raise FaultMissed(f"{point} never fired: the job ended first")
                next_check = time.monotonic() + JOB_CHECK_SECONDS
            time.sleep(POLL_SECONDS)
        raise FaultMissed(f"{point} did not fire within {self.drill.settings.give_up_seconds:.0f} s")

    def wait_staged(self, target: int, *job_ids: str) -> int:
        """Waits until import_chunks holds `target` chunks of the jobs; the count seen."""
        job_ids = job_ids or (self.job_id,)
        deadline = time.monotonic() + self.drill.settings.give_up_seconds
        next_check = time.monotonic() + JOB_CHECK_SECONDS
        while time.monotonic() < deadline:
            staged = self.stack.chunks_staged(*job_ids)
            if staged is not None and staged >= target:
                return staged
            if time.monotonic() >= next_check and len(job_ids) == 1:
                if self.job_ended():
                    raise FaultMissed(f"the job ended before {target} chunks were staged")
                next_check = time.monotonic() + JOB_CHECK_SECONDS
            time.sleep(DB_POLL_SECONDS)
        raise FaultMissed(f"import_chunks did not reach {target} chunks within the time allowed")


# ====================================================================== scenarios
@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    before_upload: Callable[[Trial], None] | None = None
    inject: Callable[[Trial], None] | None = None
    after_end: Callable[[Trial], None] | None = None


def _share(trial: Trial, share: float) -> int:
    return max(1, round(trial.chunks * share))


def _arm_chunker(trial: Trial) -> None:
    count = _share(trial, FAULT_SHARE)
    trial.stack.arm(faults.CHUNKER_AFTER_CHUNK, count)
    trial.result.notes.append(f"chunker dies after writing chunk {count} of {trial.chunks}")


def _chunker_fires(trial: Trial) -> None:
    trial.fault_at = trial.wait_fired(faults.CHUNKER_AFTER_CHUNK)


WRITER_POINTS = (faults.WRITER_BEFORE_STAGE, faults.WRITER_AFTER_STAGE)


def _arm_first_writer(trial: Trial) -> None:
    trial.stack.arm(WRITER_POINTS[0], _share(trial, WRITER_KILL_STEP))


def _writers_die(trial: Trial) -> None:
    step = _share(trial, WRITER_KILL_STEP)
    fired = []
    for kill in range(WRITER_KILLS):
        point = WRITER_POINTS[kill % 2]
        if kill:
            trial.stack.arm(point, step)
        trial.fault_at = trial.wait_fired(point)
        fired.append(f"{point} at {trial.fault_at - trial.uploaded_at:.1f} s")
    trial.result.notes.append(f"writers died every {step} chunks: " + ", ".join(fired))


def _arm_merge(trial: Trial) -> None:
    trial.stack.arm(faults.MERGE_BEFORE_FINISH, 1)


def _merge_fires(trial: Trial) -> None:
    trial.fault_at = trial.wait_fired(faults.MERGE_BEFORE_FINISH)


def _duplicate_messages(trial: Trial) -> None:
    trial.stack.arm(faults.DUPLICATE_CHUNK_MESSAGES)


def _duplicates_from_upload(trial: Trial) -> None:
    trial.fault_at = trial.uploaded_at  # the fault lasts the whole job: measured from the upload


def _stop_duplicates(trial: Trial) -> None:
    trial.stack.disarm(faults.DUPLICATE_CHUNK_MESSAGES)


def _restart_postgres(trial: Trial) -> None:
    target = _share(trial, FAULT_SHARE)
    staged = trial.wait_staged(target)
    trial.fault_at = time.monotonic()
    trial.stack.restart_postgres()
    trial.result.notes.append(
        f"pg_ctl restart -m immediate at {staged}/{trial.chunks} chunks staged, "
        f"{trial.fault_at - trial.uploaded_at:.1f} s after the upload; up again in "
        f"{time.monotonic() - trial.fault_at:.1f} s"
    )


def _interrupt_and_restart(trial: Trial) -> None:
    target = _share(trial, FAULT_SHARE)
    staged = trial.wait_staged(target)
    trial.fault_at = time.monotonic()
    code = trial.stack.interrupt()
    stopped = time.monotonic() - trial.fault_at
    if trial.stack.stragglers:
        trial.result.notes.append(
            f"still running {STRAGGLER_SECONDS:.0f} s after the Ctrl-C: " + "; ".join(trial.stack.stragglers)
        )
    trial.stack.start()
    trial.result.notes.append(
        f"Ctrl-C at {staged}/{trial.chunks} chunks staged, {trial.fault_at - trial.uploaded_at:.1f} s after the "
        f"upload; make run exited with {code} after {stopped:.1f} s; up again "
        f"{time.monotonic() - trial.fault_at:.1f} s after the Ctrl-C"
    )


def _kill_chunker(trial: Trial) -> None:
    """A real kill -9 of the chunker's worker process once it has written 40 % of the chunks (S3 objects)."""
    target = _share(trial, FAULT_SHARE)
    deadline = time.monotonic() + trial.drill.settings.give_up_seconds
    written = trial.stack.chunks_written(trial.job_id) or 0
    while written < target and time.monotonic() < deadline:
        time.sleep(DB_POLL_SECONDS / 2)
        written = trial.stack.chunks_written(trial.job_id) or 0
    killed = trial.stack.kill_workers("chunker")
    trial.fault_at = time.monotonic()
    if not killed:
        raise FaultMissed(f"no chunker worker process found to kill ({written} chunks written)")
    runs = trial.stack.query("SELECT chunks_total FROM import_runs WHERE job_id = %s", (trial.job_id,))
    chunks_total = runs[0][0] if runs else None
    trial.result.notes.append(
        f"kill -9 of chunker worker(s) {killed} {trial.fault_at - trial.uploaded_at:.1f} s after the upload, "
        f"{written} of {trial.chunks} chunks written, {trial.stack.chunks_staged(trial.job_id)} staged"
    )
    if chunks_total is not None:
        raise FaultMissed(f"the chunker had already finished the file ({chunks_total} chunks) when it was killed")


def _kill_writers(trial: Trial) -> None:
    """Real kill -9 of every writer worker process, four times, at 15/30/45/60 % of the chunks staged."""
    kills = []
    for kill in range(1, WRITER_KILLS + 1):
        staged = trial.wait_staged(_share(trial, WRITER_KILL_STEP * kill))
        killed: list[int] = []
        for _ in range(100):  # workers come back with the next message: look again for a while
            killed = trial.stack.kill_workers("writer")
            if killed:
                break
            time.sleep(0.1)
        if not killed:
            raise FaultMissed(f"no writer worker process found to kill (kill {kill})")
        trial.fault_at = time.monotonic()
        kills.append(f"{len(killed)} at {staged} chunks ({trial.fault_at - trial.uploaded_at:.1f} s)")
    trial.result.notes.append("kill -9 of the writers: " + ", ".join(kills))


SCENARIOS: dict[str, Scenario] = {
    scenario.key: scenario
    for scenario in (
        Scenario("a", "chunker dies mid-file (fault point)", _arm_chunker, _chunker_fires),
        Scenario("a-kill", "kill -9 of the chunker's worker mid-file", None, _kill_chunker),
        Scenario("b", "writers die four times (fault points)", _arm_first_writer, _writers_die),
        Scenario("b-kill", "kill -9 of the writers' workers four times", None, _kill_writers),
        Scenario("c", "PostgreSQL restart -m immediate mid-import", None, _restart_postgres),
        Scenario("d", "Ctrl-C of make run mid-import, started again", None, _interrupt_and_restart),
        Scenario("e", "every chunk message delivered twice", _duplicate_messages, _duplicates_from_upload,
                 _stop_duplicates),
        Scenario("f", "imports and exports at once over loaded users"),
        Scenario("g", "the merging writer dies after its commit (fault point)", _arm_merge, _merge_fires),
    )
}  # fmt: skip
ALL_KEYS = tuple(SCENARIOS)


# ====================================================================== the drill
class Drill:
    """Runs scenarios; the clean runs they compare with are made once per drill, on fresh stacks too."""

    def __init__(self, settings: DrillSettings) -> None:
        self.settings = settings
        settings.work_dir.mkdir(parents=True, exist_ok=True)
        self._baselines: dict[str, Baseline | str] = {}
        self._stacks = 0

    def log(self, text: str) -> None:
        self.settings.log(f"{time.strftime('%H:%M:%S')} {text}")

    # ------------------------------------------------------------------ files
    def data_file(
        self,
        resource: str,
        rows: int,
        clean: bool = False,
        *,
        user_rows: int | None = None,
        article_rows: int | None = None,
    ) -> Path:
        fmt = datagen.DEFAULT_FORMAT[resource]
        name = f"{resource}-{rows}-{self.settings.seed}{'-clean' if clean else ''}.{fmt}"
        path = self.settings.work_dir / "data" / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".partial")
            records = datagen.generate(
                resource, rows, self.settings.seed, clean, user_rows=user_rows, article_rows=article_rows
            )
            datagen.write(resource, records, fmt, partial)
            partial.replace(path)
        return path

    def users_file(self) -> Path:
        return self.data_file("users", self.settings.rows)

    def single_files(self) -> list[tuple[str, Path]]:
        """The imports of a single-import scenario, one after another; the fault hits the last one.

        Articles and comments point at users (and articles) loaded first, by an import of a quarter as many rows
        that no fault touches (compared all the same)."""
        rows, resource = self.settings.rows, self.settings.resource
        if resource == "users":
            return [("users", self.users_file())]
        referenced = max(1000, rows // 4)
        files = [("users", self.data_file("users", referenced))]
        if resource == "articles":
            return [*files, ("articles", self.data_file("articles", rows, user_rows=referenced))]
        files.append(("articles", self.data_file("articles", referenced, user_rows=referenced)))
        comments = self.data_file("comments", rows, user_rows=referenced, article_rows=referenced)
        return [*files, ("comments", comments)]

    def concurrent_files(self) -> tuple[Path, Path, Path]:
        """(f): the loaded users; articles pointing only at them; a second users file (the clean half)."""
        rows = self.settings.rows
        return (
            self.users_file(),
            self.data_file("articles", max(1, rows // 2), user_rows=rows),
            self.data_file("users", max(1, rows // 2), clean=True),
        )

    # ------------------------------------------------------------------ stacks
    def _new_stack(self, key: str) -> ChaosStack:
        self._stacks += 1
        state_dir = self.settings.work_dir / f"state-{self._stacks:02d}-{key}"
        return ChaosStack(state_dir, source_root=self.settings.source_root)

    def _finish_stack(self, stack: ChaosStack, key: str, keep_logs: bool) -> Path | None:
        stack.stop(graceful=self.settings.keep_state)  # a state folder about to be deleted needs no saving
        if self.settings.keep_state:
            return stack.state_dir
        kept = self.settings.work_dir / "kept-logs" / key if keep_logs else None
        stack.remove(kept)
        return kept

    def _outcome(self, stack: ChaosStack, api: Api, jobs: list[dict[str, Any]]) -> Outcome:
        return Outcome(
            tuple(JobOutcome.of(job, api.error_report(job["job_id"])) for job in jobs),
            table_digests(stack),
        )

    # ------------------------------------------------------------------ clean runs
    def baseline(self, concurrent: bool = False) -> Baseline:
        key = "clean-f" if concurrent else "clean"
        if key not in self._baselines:
            try:
                self._baselines[key] = self._clean_run(key, concurrent)
            except (StackError, ApiError, FaultMissed, OSError) as error:
                self._baselines[key] = f"the clean run failed: {error}"
        baseline = self._baselines[key]
        if isinstance(baseline, str):
            raise FaultMissed(baseline)
        return baseline

    def clean_seconds(self) -> str:
        """How long the clean runs took (upload to the end of the last job), for the report."""
        parts = []
        for key, baseline in self._baselines.items():
            text = baseline if isinstance(baseline, str) else f"{baseline.seconds:.1f} s, chunks {baseline.chunks}"
            parts.append(f"{key} {text}")
        return "; ".join(parts) or "none"

    def _clean_run(self, key: str, concurrent: bool) -> Baseline:
        files = (
            list(zip(("users", "articles", "users"), self.concurrent_files(), strict=True))
            if concurrent
            else self.single_files()
        )
        stack = self._new_stack(key)
        self.log(f"[{key}] starting a fresh stack in {stack.state_dir}")
        ok = False
        try:
            stack.start()
            api = Api(stack.api_url, stack.token())
            jobs = []
            started = time.monotonic()
            for resource, path in files:  # one after another
                job_id = api.import_file(resource, datagen.DEFAULT_FORMAT[resource], path)
                wait = api.wait_job(job_id, time.monotonic() + self.settings.give_up_seconds)
                if not wait.ended or wait.job is None:
                    raise FaultMissed(f"{resource} import {job_id} of the clean run did not end: {wait.job}")
                jobs.append(wait.job)
            seconds = time.monotonic() - started
            outcome = self._outcome(stack, api, jobs)
            chunks = tuple(int((job.get("progress") or {}).get("chunks_total") or 0) for job in jobs)
            self.log(f"[{key}] {outcome.summary()} in {seconds:.1f} s, chunks {chunks}")
            ok = True
            return Baseline(outcome, chunks, seconds)
        finally:
            self._finish_stack(stack, key, keep_logs=not ok)

    # ------------------------------------------------------------------ scenarios
    def run(self, key: str) -> ScenarioResult:
        scenario = SCENARIOS[key]
        result = ScenarioResult(key, scenario.title)
        try:
            baseline = self.baseline(concurrent=key == "f")
        except FaultMissed as error:
            result.problems.append(str(error))
            return result
        result.expected = baseline.outcome.summary()
        stack = self._new_stack(key)
        self.log(f"[{key}] {scenario.title}: starting a fresh stack in {stack.state_dir}")
        api: Api | None = None
        try:
            stack.start()
            api = Api(stack.api_url, stack.token())
            trial = Trial(self, stack, api, result, baseline.chunks[-1])
            if key == "f":
                self._run_concurrent(trial, baseline)
            else:
                self._run_single(trial, scenario, baseline)
        except (StackError, ApiError, FaultMissed, OSError) as error:
            result.problems.append(f"{type(error).__name__}: {error}")
        finally:
            if api is not None:
                _note_transient(result, api)
            result.kept = self._finish_stack(stack, key, keep_logs=not result.passed)
        self.log(f"[{key}] {'PASS' if result.passed else 'FAIL'}")
        return result

    def _run_single(self, trial: Trial, scenario: Scenario, baseline: Baseline) -> None:
        settings = self.settings
        *references, (resource, path) = self.single_files()
        loaded = []
        for referenced, referenced_path in references:  # before any fault is armed
            job_id = trial.api.import_file(referenced, datagen.DEFAULT_FORMAT[referenced], referenced_path)
            wait = trial.api.wait_job(job_id, time.monotonic() + settings.give_up_seconds)
            if not wait.ended or wait.job is None:
                raise FaultMissed(f"the {referenced} import loaded first did not end: {wait.job}")
            loaded.append(wait.job)
        if scenario.before_upload:
            scenario.before_upload(trial)
        trial.job_id = trial.api.import_file(resource, datagen.DEFAULT_FORMAT[resource], path)
        trial.uploaded_at = time.monotonic()
        trial.log(f"{resource} job {trial.job_id} uploaded")
        if scenario.inject:
            scenario.inject(trial)
        fault_at = trial.fault_at if trial.fault_at is not None else trial.uploaded_at
        wait = trial.api.wait_job(trial.job_id, fault_at + settings.give_up_seconds)
        if scenario.after_end:
            scenario.after_end(trial)
        self._judge(trial, [*loaded, *([wait.job] if wait.job else [])], wait.ended, wait.ended_at, fault_at, baseline)

    def _judge(
        self,
        trial: Trial,
        jobs: list[dict[str, Any]],
        ended: bool,
        ended_at: float | None,
        fault_at: float,
        baseline: Baseline,
    ) -> None:
        result, settings = trial.result, self.settings
        result.ended = ended
        if ended and ended_at is not None:
            result.seconds_after_fault = ended_at - fault_at
            trial.log(f"ended {result.seconds_after_fault:.1f} s after the fault")
        if not ended:
            views = "; ".join(_job_state(job) for job in jobs) or "no answer"
            result.observed = f"STUCK: {views}"
            result.problems.append(
                f"the job did not end within {settings.give_up_seconds:.0f} s of the fault ({views})"
            )
            result.notes.extend(self._diagnostics(trial.stack, [job["job_id"] for job in jobs]))
            return
        outcome = self._outcome(trial.stack, trial.api, jobs)
        result.observed = outcome.summary()
        differences = outcome.differences(baseline.outcome)
        result.problems.extend(differences)
        if (
            settings.finish_within_seconds is not None
            and result.seconds_after_fault is not None
            and result.seconds_after_fault > settings.finish_within_seconds
        ):
            result.problems.append(
                f"ended {result.seconds_after_fault:.0f} s after the fault (promised: "
                f"{settings.finish_within_seconds:.0f} s)"
            )
        if result.problems:
            result.notes.extend(self._diagnostics(trial.stack, [job["job_id"] for job in jobs]))

    def _run_concurrent(self, trial: Trial, baseline: Baseline) -> None:
        """(f): users loaded first; then at once an articles import, a second users import, two streamed exports
        (users and articles, each repeated back to back until both imports have ended, so that some overlap
        the merges) and an async export (users, started at EXPORTS_AT_SHARE of the chunks). Each file points
        only at rows loaded before, so the imports have one right answer: that of the same imports one after
        another. An export has no single right content while imports run, but each must be whole (every line a
        record, ids strictly increasing) and hold between the table's rows before and after."""
        result, settings, api, stack = trial.result, self.settings, trial.api, trial.stack
        users, articles, more_users = self.concurrent_files()
        first = api.import_file("users", "csv", users)
        loaded = api.wait_job(first, time.monotonic() + settings.give_up_seconds)
        if not loaded.ended or loaded.job is None:
            raise FaultMissed(f"the first users import did not end: {loaded.job}")
        before = _row_counts(stack)
        imports_done = threading.Event()
        deadline = time.monotonic() + 2 * settings.give_up_seconds
        abandon = threading.Event()  # set when the drill stops early (an error, Ctrl-C): every thread ends
        with concurrent.futures.ThreadPoolExecutor(max_workers=5) as pool:
            try:
                uploads = [
                    pool.submit(api.import_file, "articles", "ndjson", articles),
                    pool.submit(api.import_file, "users", "csv", more_users),
                ]
                streams = {
                    resource: pool.submit(_stream_rounds, api, resource, imports_done, deadline)
                    for resource in ("users", "articles")
                }
                job_ids = [future.result(timeout=settings.give_up_seconds) for future in uploads]
                trial.uploaded_at = time.monotonic()
                trial.log(f"articles job {job_ids[0]} and users job {job_ids[1]} uploaded; streamed exports running")
                try:
                    trial.wait_staged(max(1, round(sum(baseline.chunks[1:]) * EXPORTS_AT_SHARE)), *job_ids)
                except FaultMissed as error:
                    result.notes.append(f"async export started late: {error}")
                trial.log(f"async export started {time.monotonic() - trial.uploaded_at:.1f} s after the uploads")
                async_export = pool.submit(api.async_export, "users", deadline, abandon)
                fault_at = trial.uploaded_at
                waits = [api.wait_job(job_id, fault_at + settings.give_up_seconds) for job_id in job_ids]
                imports_done.set()
                rounds = {
                    resource: future.result(timeout=settings.give_up_seconds) for resource, future in streams.items()
                }
                async_answer = async_export.result(timeout=max(1.0, deadline - time.monotonic() + 60))
            except BaseException:
                abandon.set()
                imports_done.set()
                raise
        ended = all(wait.ended for wait in waits)
        ended_at = max((wait.ended_at or 0.0) for wait in waits) if ended else None
        jobs = [loaded.job] + [wait.job for wait in waits if wait.job is not None]
        self._judge(trial, jobs, ended, ended_at, fault_at, baseline)
        after = _row_counts(stack)
        checks = [
            (f"streamed {resource}", resource, answer) for resource, answers in rounds.items() for answer in answers
        ]
        checks.append(("async users", "users", export_shape(*async_answer)))
        seen: dict[str, list[int]] = {}
        for name, table, (rows, problem) in checks:
            if problem is None and rows is not None and not before[table] <= rows <= after[table]:
                problem = f"{rows} rows, outside [{before[table]}, {after[table]}]"
            if problem:
                result.problems.append(f"{name} export: {problem}")
            elif rows is not None:
                seen.setdefault(name, []).append(rows)
        for name, counts in seen.items():
            result.notes.append(
                f"{name} export: {len(counts)} whole, ordered answers; rows seen {sorted(set(counts))} "
                f"(table before {before[name.split()[1]]}, after {after[name.split()[1]]})"
            )

    # ------------------------------------------------------------------ diagnostics
    def _diagnostics(self, stack: ChaosStack, job_ids: list[str]) -> list[str]:
        """What the database says about the jobs: their run row, their chunks, the failures recorded."""
        notes = []
        for job_id in job_ids:
            try:
                runs = stack.query("SELECT row_to_json(r)::text FROM import_runs r WHERE job_id = %s", (job_id,))
                chunks = stack.query(
                    "SELECT count(*), max(chunk_no), coalesce(sum(records), 0) FROM import_chunks WHERE job_id = %s",
                    (job_id,),
                )
                numbers = {n for (n,) in stack.query(
                    "SELECT chunk_no FROM import_chunks WHERE job_id = %s", (job_id,)
                )}  # fmt: skip
                failures = stack.query(
                    "SELECT chunk_no, attempts, left(last_error, 300) FROM import_chunk_failures WHERE job_id = %s"
                    " ORDER BY chunk_no LIMIT 5",
                    (job_id,),
                )
                errors = stack.query("SELECT count(*) FROM import_errors WHERE job_id = %s", (job_id,))
            except Exception as error:  # the database may be what failed
                notes.append(f"job {job_id}: database unreachable for diagnostics ({error})")
                continue
            run = orjson.loads(runs[0][0]) if runs else None
            count, highest, records = chunks[0]
            total = (run or {}).get("chunks_total") or highest or 0
            missing = sorted(set(range(1, int(total) + 1)) - numbers)
            notes.append(f"job {job_id}: import_runs {run}")
            notes.append(
                f"job {job_id}: import_chunks {count} rows (highest {highest}, {records} records), "
                f"missing chunks {missing[:20]}{'...' if len(missing) > 20 else ''}; "
                f"import_errors {errors[0][0]} rows; chunk failures {failures or 'none'}"
            )
        return notes


def _job_state(job: dict[str, Any]) -> str:
    progress = job.get("progress") or {}
    counters = job.get("counters") or {}
    return (
        f"{job.get('resource')} {job.get('status')}, chunks {progress.get('chunks_done')}/"
        f"{progress.get('chunks_total')}, processed {counters.get('processed')}/{counters.get('total')}"
    )


def _note_transient(result: ScenarioResult, api: Api) -> None:
    if api.transient_answers:
        result.notes.append(
            f"API: {len(api.transient_answers)} failed answers while polling (first: {api.transient_answers[0]})"
        )


def _row_counts(stack: ChaosStack) -> dict[str, int]:
    return {
        table: int(stack.query(f"SELECT count(*) FROM {table}")[0][0]) for table in ("users", "articles", "comments")
    }


def export_shape(status: int | str, body: bytes) -> tuple[int | None, str | None]:
    """(rows, problem) of an NDJSON export: answered in full, every line a record, ids strictly increasing."""
    if status not in (200, "completed"):
        return None, f"{status} {body[:300]!r}"
    ids = []
    for number, line in enumerate(body.splitlines(), 1):
        try:
            ids.append(orjson.loads(line)["id"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return None, f"line {number} is not a record: {line[:200]!r}"
    if any(later <= earlier for earlier, later in itertools.pairwise(ids)):
        return None, "ids are not strictly increasing"
    return len(ids), None


MAX_EXPORT_ROUNDS = 1000
EXPORT_ROUND_PAUSE_SECONDS = 0.2  # an empty table answers at once: without a pause the rounds run out early


def _stream_rounds(
    api: Api, resource: str, done: threading.Event, deadline: float
) -> list[tuple[int | None, str | None]]:
    """Streamed exports of a resource, one after another, until `done` is set, then one more (so that one sees
    the end state); bounded by MAX_EXPORT_ROUNDS and `deadline`."""
    answers: list[tuple[int | None, str | None]] = []
    last = False
    for _ in range(MAX_EXPORT_ROUNDS):
        last = done.is_set()
        try:
            status, body = api.stream_export(resource)
        except OSError as error:
            answers.append((None, f"{type(error).__name__}: {error}"))
        else:
            answers.append(export_shape(status, body))
        if last or time.monotonic() > deadline:
            break
        done.wait(EXPORT_ROUND_PAUSE_SECONDS)
    return answers
