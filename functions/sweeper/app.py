"""Sweeper (a Schedule event, every minute on AWS): every unfinished import job ends.

It resumes jobs whose chunker died, whose writers went silent or whose merge never ran, fails the ones that
cannot finish (an upload that never came, a chunker that keeps dying) with a reason, and deletes old per-job
metric groups from the Pushgateway. The rules: bulkio/domain/sweep.py.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from bulkio.bootstrap import pushing_metrics, sweeper

logger = Logger()


@pushing_metrics
@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return {"actions": sweeper().sweep()}
