"""What every `Trainer` task shares (XNLI in `nli/`, NER in `ner/`): training arguments from the command's
options, checkpoint resolution, loading the tokenizer, the staged final save, result files, data-file specs and
optional LoRA (`lora`). Needs the `finetune` extra (datasets): importing this package without it raises a
`MissingDependencyError` naming the install command."""

from ..common.dependencies import require

require("datasets")
