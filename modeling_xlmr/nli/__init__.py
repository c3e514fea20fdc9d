"""XNLI-style sentence-pair classification: data (`data`), per-language results (`evaluation`) and
`Trainer` runs (`training`). Needs the `finetune` extra (datasets): importing this package without it
raises a `MissingDependencyError` naming the install command."""

from ..common.dependencies import require

require("datasets")
