#!/usr/bin/env bash
# Real fairseq, used only as an independent reference by tests/test_conversion_fairseq.py (the package never
# needs it). fairseq==0.12.2 does not import on Python 3.11; fairseq-fixed does. It is built without build
# isolation and without dependencies so that pip never replaces the installed (CPU) torch; Cython must be there
# before the build, and hydra-core must be 1.3.x on Python 3.11. Takes about 2.5 minutes on 2 cores.
set -euo pipefail
if python -c "import fairseq" 2>/dev/null; then
    exit 0
fi
pip install cython "hydra-core==1.3.2" "omegaconf==2.3.0" bitarray sacrebleu scikit-learn
pip install --no-build-isolation --no-deps "fairseq-fixed==0.12.3.1"
python -c "import fairseq; print('fairseq', fairseq.__version__)"
