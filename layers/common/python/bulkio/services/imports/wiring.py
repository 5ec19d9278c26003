"""The import service's parts put together on one set of ports: the bootstrap wires them to the real adapters,
the tests to fakes."""

from __future__ import annotations

from dataclasses import dataclass

from bulkio.config import Settings
from bulkio.domain.records import ValidationRules
from bulkio.services.imports.api import ImportApi
from bulkio.services.imports.chunking import Chunker
from bulkio.services.imports.completion import CallbackDeliverer, Completion
from bulkio.services.imports.ending import JobEnding
from bulkio.services.imports.sweeping import DeadLetters, Sweeper
from bulkio.services.imports.writing import ChunkWriter
from bulkio.services.ports import (
    CallbackQueue,
    CallbackSender,
    ChunkerLauncher,
    ChunkQueue,
    EventPublisher,
    IdempotencyRecords,
    ImportJobRepository,
    ImportStore,
    MetricsSink,
    ObjectStore,
    SourceOpener,
)


@dataclass(frozen=True, slots=True)
class ImportParts:
    api: ImportApi
    chunker: Chunker
    writer: ChunkWriter
    sweeper: Sweeper
    dead_letters: DeadLetters
    ending: JobEnding
    callbacks: CallbackDeliverer


def wire_imports(
    settings: Settings,
    jobs: ImportJobRepository,
    idempotency: IdempotencyRecords,
    objects: ObjectStore,
    queue: ChunkQueue,
    store: ImportStore,
    rules: ValidationRules,
    metrics: MetricsSink,
    launch_chunker: ChunkerLauncher,
    open_source_url: SourceOpener,
    events: EventPublisher,
    callbacks: CallbackQueue,
    send_callback: CallbackSender,
) -> ImportParts:
    completion = Completion(jobs, events, callbacks)
    ending = JobEnding(jobs, objects, queue, store, metrics, completion)
    return ImportParts(
        api=ImportApi(settings, jobs, idempotency, objects, store, launch_chunker, completion, callbacks),
        chunker=Chunker(settings, jobs, objects, queue, store, ending, open_source_url),
        writer=ChunkWriter(settings, jobs, objects, queue, store, rules, metrics, ending),
        sweeper=Sweeper(settings, jobs, objects, queue, store, metrics, ending, launch_chunker),
        dead_letters=DeadLetters(settings, jobs, store, metrics, ending),
        ending=ending,
        callbacks=CallbackDeliverer(settings, jobs, callbacks, send_callback),
    )
