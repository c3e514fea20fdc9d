"""`python -m modeling_xlmr.cli ...` (what `accelerate launch -m modeling_xlmr.cli ...` runs)."""

import sys

from . import main

sys.exit(main())
