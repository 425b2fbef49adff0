# syntax=docker/dockerfile:1
# nsbaseline operator image: the wheel built in stage 1, installed into a clean virtualenv in a
# slim final stage. Runs as the numeric non-root UID 65532 and writes nothing to its own
# filesystem at runtime (readOnlyRootFilesystem: true; /tmp comes from an emptyDir).
# CI has no container engine: tests/e2e/test_image.py repeats these exact steps in a clean venv.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY templates/ templates/
COPY crds/ crds/
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PATH=/opt/nsbaseline/bin:$PATH
COPY --from=build /wheels /wheels
# pip compiles the bytecode now, at build time, so the read-only image never needs to write it.
RUN python -m venv /opt/nsbaseline \
 && /opt/nsbaseline/bin/pip install /wheels/*.whl \
 && rm -rf /wheels
USER 65532:65532
WORKDIR /tmp
EXPOSE 8080 9090
ENTRYPOINT ["nsbaseline"]
CMD ["run", "--peering"]
