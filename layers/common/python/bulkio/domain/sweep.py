"""The sweeper's rules: what an unfinished import job needs so that it ends. Pure: the service gathers the facts.

Every job must end, whatever crashed on its way (a function, PostgreSQL, the whole stack). A job that is not
final is looked at through two records: its DynamoDB item (status, chunker lease) and its PostgreSQL run (chunks
announced and staged, merged or failed, the last sign of life). From those, one action:

- the run failed or was merged in PostgreSQL but the item was never told (`stall_seconds` after the merge, so
  that the process that merged has finished its report): tell it (FAIL / FINISH);
- an upload that never came: the presigned URL expired, so the job fails (upload_expired); if the file is there
  (its S3 event was lost) the chunker is launched;
- a queued job nobody started (a lost launch or S3 event): launch the chunker;
- a chunker whose lease ran out before it announced its chunks (killed, timed out): launch it again, up to
  `max_chunker_runs` runs in all, then fail (chunker_failed). The source is pinned, so a run reads the bytes the
  first one read;
- every chunk staged but no merge for `stall_seconds` (the merging process died): merge (FINISH; a merge still
  under way holds the run's row, and the sweeper does not wait for it);
- writers silent for `stall_seconds` with chunks unstaged (lost, dead-lettered late, or invisible after a killed
  writer): send those chunks' messages again (staging is idempotent), up to `max_resends` times in a row without
  progress, then fail.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from bulkio.domain.jobs import ImportJob, JobStatus


class SweepAction(StrEnum):
    NOTHING = "nothing"
    LAUNCH_CHUNKER = "launch_chunker"
    RESEND_CHUNKS = "resend_chunks"
    FINISH = "finish"  # merge if needed, then record the outcome
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class SweepSettings:
    stall_seconds: float = 180.0
    max_chunker_runs: int = 3
    max_resends: int = 5
    # How long after its creation a presigned job may still receive its file: the URL's lifetime plus slack; for
    # a resumable (multipart) upload, whose part URLs are handed out again on request, a longer window.
    upload_window_seconds: float = 3600.0 + 300.0
    multipart_upload_window_seconds: float = 86400.0


@dataclass(frozen=True, slots=True)
class RunState:
    """What PostgreSQL knows of an import run."""

    chunks_total: int | None
    records_total: int | None
    chunks_staged: int
    merged: bool
    failed: bool
    # Seconds since the last sign of life: a chunk staged, the chunker's last announcement, a re-send, the merge.
    last_activity_age_seconds: float | None
    resends: int  # re-sends in a row with no chunk staged in between


@dataclass(frozen=True, slots=True)
class SweepDecision:
    action: SweepAction
    code: str | None = None
    message: str | None = None


NOTHING = SweepDecision(SweepAction.NOTHING)


def decide(
    job: ImportJob,
    run: RunState | None,
    now_epoch: float,
    settings: SweepSettings,
    upload_present: bool = False,
) -> SweepDecision:
    """`upload_present`: for an awaiting_upload job, whether its source object exists."""
    if job.is_final:
        return NOTHING
    age = now_epoch - job.created_at.timestamp()
    if run is not None and run.failed:
        return SweepDecision(
            SweepAction.FAIL,
            "job_interrupted",
            "the job was stopped (failed or cancelled) but its status was never recorded: submit the import again",
        )
    if run is not None and run.merged:
        return SweepDecision(SweepAction.FINISH) if _stalled(run, settings) else NOTHING
    if job.status is JobStatus.AWAITING_UPLOAD:
        if upload_present and age > settings.stall_seconds:
            return SweepDecision(SweepAction.LAUNCH_CHUNKER)
        window = settings.multipart_upload_window_seconds if job.source.upload_id else settings.upload_window_seconds
        if age > window:
            return SweepDecision(
                SweepAction.FAIL,
                "upload_expired",
                "no file was uploaded to the presigned URL before it expired: create a new import "
                "(POST /v1/imports) and PUT the file to its upload URL",
            )
        return NOTHING
    if job.status is JobStatus.QUEUED:
        return SweepDecision(SweepAction.LAUNCH_CHUNKER) if age > settings.stall_seconds else NOTHING
    chunked = run is not None and run.chunks_total is not None
    if not chunked:
        if job.lease_until is not None and job.lease_until > now_epoch:
            return NOTHING  # a chunker is reading the source and renewing its lease
        if job.chunker_runs >= settings.max_chunker_runs:
            return SweepDecision(
                SweepAction.FAIL,
                "chunker_failed",
                f"reading the source stopped {job.chunker_runs} times before it was finished (the chunker was "
                "killed or timed out each time): check the file (size, compression) and submit the import again",
            )
        return SweepDecision(SweepAction.LAUNCH_CHUNKER)
    assert run is not None and run.chunks_total is not None
    if not _stalled(run, settings):
        return NOTHING
    if run.chunks_staged >= run.chunks_total:
        return SweepDecision(SweepAction.FINISH)
    if run.resends >= settings.max_resends:
        unstaged = run.chunks_total - run.chunks_staged
        return SweepDecision(
            SweepAction.FAIL,
            "chunks_stalled",
            f"{unstaged} of {run.chunks_total} chunks were never staged, although their messages were sent "
            f"{run.resends + 1} times: the writers cannot reach the database or keep failing on them; "
            "fix the cause and submit the import again",
        )
    return SweepDecision(SweepAction.RESEND_CHUNKS)


def _stalled(run: RunState, settings: SweepSettings) -> bool:
    age = run.last_activity_age_seconds
    return age is not None and age > settings.stall_seconds


def retry_delay_seconds(receive_count: int, first_seconds: int = 2, longest_seconds: int = 60) -> int:
    """How long a chunk that failed waits before its next try: doubling from `first_seconds` with each receive,
    at most `longest_seconds`. With 2 s and 60 s, ten receives span over five minutes, so a database outage of
    a minute or two costs seconds of retries, never a dead letter."""
    return int(min(longest_seconds, first_seconds * 2 ** max(receive_count - 1, 0)))
