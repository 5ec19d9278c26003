"""The import service, in the parts the functions run: the API side (api), the chunker (chunking), the writers
(writing), the sweeper and the dead-letter consumer (sweeping), and how a job ends, merged or failed, whoever
ends it (ending). `wire_imports` puts the parts together on one set of ports."""
