# syntax=docker/dockerfile:1
# nsbaseline operator image: the wheel built in stage 1, installed into a clean virtualenv in a
# slim final stage. Runs as the numeric non-root UID 65532 and writes nothing to its own
# filesystem at runtime (readOnlyRootFilesystem: true; /tmp comes from an emptyDir).
# `make image` (hack/image/build.sh) builds this file with podman, and tests/e2e/test_image.py runs
# the result the way deploy/base/deployment.yaml runs its pod. Users: see docs/image.md.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY operator/ operator/
COPY templates/ templates/
COPY crds/ crds/
RUN pip wheel --no-deps --wheel-dir /wheels . && cp constraints.txt /wheels/

FROM ${PYTHON_IMAGE}
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PATH=/opt/nsbaseline/bin:$PATH
COPY --from=build /wheels /wheels
# Dependencies at the exact versions of constraints.txt, so two builds of one commit are the same.
# pip compiles the bytecode now, at build time, so the read-only image never needs to write it.
# UID 65532 gets a name, nonroot (as in distroless images): container runtimes add no /etc/passwd
# entry, and without one Python's getpass.getuser() raises, which Kopf calls to name a replica that
# has no POD_ID (a plain `docker run`, or a Deployment without that env). --no-log-init keeps a
# sparse lastlog record for UID 65532 out of the layer.
RUN python -m venv /opt/nsbaseline \
 && /opt/nsbaseline/bin/pip install --constraint /wheels/constraints.txt /wheels/*.whl \
 && rm -rf /wheels \
 && groupadd --system --gid 65532 nonroot \
 && useradd --system --no-log-init --uid 65532 --gid 65532 --no-create-home \
    --home-dir /nonexistent --shell /usr/sbin/nologin nonroot
USER 65532:65532
WORKDIR /tmp
EXPOSE 8080 9090
ENTRYPOINT ["nsbaseline"]
CMD ["run", "--peering"]
