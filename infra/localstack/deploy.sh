#!/usr/bin/env bash
# Runs inside the compose "deployer" container: migrate the database, then build and deploy template.yaml
# into LocalStack with samlocal (the same template as AWS; only the endpoint differs).
set -euo pipefail
pip install --quiet -r requirements-dev.txt aws-sam-cli aws-sam-cli-local
python -m infra.migrate
samlocal build --use-container=false
# Tokens: the same HS256 secret, issuer and audience as the embedded stack (.state/jwt-secret in the mounted
# clone), so `make token` on the host prints tokens this stack accepts. The command line's overrides replace
# samconfig's, hence all of them here.
auth=$(python -c 'from pathlib import Path; from infra.local.auth import local_auth_parameters as p
print(" ".join(f"{k}={v}" for k, v in p(Path(".state")).items()))')
samlocal deploy --config-env localstack --no-confirm-changeset --no-fail-on-empty-changeset \
  --parameter-overrides DatabaseUrl=postgresql://bulkio:bulkio@postgres:5432/bulkio MaxUploadBytes=209715200 \
  PushgatewayUrl=http://pushgateway:9091 $auth
samlocal list stack-outputs --stack-name bulkio-localstack --output json
