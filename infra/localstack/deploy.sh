#!/usr/bin/env bash
# Runs inside the compose "deployer" container: migrate the database, then build and deploy template.yaml
# into LocalStack with samlocal (the same template as AWS; only the endpoint differs).
set -euo pipefail
pip install --quiet -r requirements-dev.txt aws-sam-cli aws-sam-cli-local
python -m infra.migrate
samlocal build --use-container=false
samlocal deploy --config-env localstack --no-confirm-changeset --no-fail-on-empty-changeset
samlocal list stack-outputs --stack-name bulkio-localstack --output json
