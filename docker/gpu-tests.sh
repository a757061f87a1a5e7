#!/bin/sh
# The CUDA image's test command: the gpu-marked tests (tests/gpu/test_gpu_pipeline.py,
# tests/gpu/test_kernels_gpu.py, ...) against the gpualign installed in the image.
# Copied to /usr/local/bin/gpualign-gpu-tests by docker/Dockerfile.cuda:
#
#   docker run --rm --gpus all --entrypoint gpualign-gpu-tests gpualign:cuda [PYTEST ARGS]
#
# Without a usable GPU (e.g. --gpus all forgotten) it says so in one line and exits 2
# instead of reporting every gpu test as skipped.
set -eu
# Run from / so that `import gpualign` is the installed package, not the source copy.
(cd / && python -c '
import sys
import gpualign
try:
    backend = gpualign.get_backend("cupy")
except gpualign.BackendUnavailable as exc:
    sys.exit(f"gpualign-gpu-tests: no usable GPU: {exc.args[0]} (run the container with --gpus all)")
print(f"gpualign-gpu-tests: {backend.device}, {backend.reason}")
') || exit 2
cd "${GPUALIGN_SRC:-/opt/gpualign}"  # tests/ and the pyproject.toml that configures pytest
# The pytest script (not `python -m pytest`, which would put the source copy first on
# sys.path): the tests import the installed gpualign.
exec pytest -p no:cacheprovider -m gpu "$@"
